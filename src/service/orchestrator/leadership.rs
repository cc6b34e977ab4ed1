//! [`Leadership`]: the lease while an orchestrator serves, as a sans-IO state
//! machine.
//!
//! It performs no I/O and reads no clock: the serve loop passes `now` in,
//! performs the renewals it is asked for ([`Leadership::poll`] returns
//! [`Action::Renew`]), reports their outcomes ([`Leadership::handle_renewal`]),
//! and sleeps until [`Leadership::poll_timeout`]. The rules (see
//! [Standby](super::Orchestrator#standby)):
//!
//! - a term that begins with an acquisition sent at `t` is valid until
//!   `t + ttl / 2`, and the first renewal is due at `t + ttl / 3`;
//! - a successful renewal sent at `s` extends the validity to `s + ttl / 2`
//!   (never shortens it) and schedules the next one at `s + ttl / 3`;
//! - a failed renewal (the lease could not be reached) is tried again after
//!   `ttl / 12` (at least 5 ms);
//! - the orchestrator steps down once `now` reaches the end of the validity,
//!   or as soon as a renewal says that someone else holds the lease.

use std::time::{Duration, Instant};

/// The shortest wait before a failed renewal is tried again.
const MIN_RETRY: Duration = Duration::from_millis(5);

/// What the serve loop must do for the lease now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send a renewal (bounded by [`Leadership::renewal_limit`]) and report its
    /// outcome with [`Leadership::handle_renewal`].
    Renew,
    /// Stop answering at once and stand by again.
    StepDown(StepDown),
}

/// Why the term ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StepDown {
    /// No renewal succeeded in time: the validity of the term ended.
    Expired,
    /// A renewal said that another orchestrator holds the lease.
    HeldByOther,
}

/// The outcome of one renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Renewed {
    /// The lease is still ours, for another `ttl`.
    Held,
    /// Another orchestrator holds the lease.
    HeldByOther,
    /// The lease could not be reached (an error or a timeout).
    Failed,
}

/// The lease while this orchestrator serves: when to renew it, and until when
/// the orchestrator may answer.
#[derive(Debug, Clone)]
pub(crate) struct Leadership {
    ttl: Duration,
    /// When the orchestrator must have stopped answering unless a renewal succeeds.
    valid_until: Instant,
    /// When to renew next.
    renew_at: Instant,
    /// Whether a renewal was asked for and its outcome is not in yet.
    renewing: bool,
    /// Set once a renewal said that someone else holds the lease.
    lost: bool,
}

impl Leadership {
    /// A term that begins with an acquisition of a lease kept for `ttl`, sent at `sent`.
    pub(crate) fn new(ttl: Duration, sent: Instant) -> Self {
        Self {
            ttl,
            valid_until: sent + ttl / 2,
            renew_at: sent + ttl / 3,
            renewing: false,
            lost: false,
        }
    }

    /// The lease's time to live.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How long a renewal may take before it counts as failed.
    pub(crate) fn renewal_limit(&self) -> Duration {
        self.ttl / 3
    }

    /// Until when the orchestrator may answer and write, unless a renewal
    /// succeeds.
    pub(crate) fn valid_until(&self) -> Instant {
        self.valid_until
    }

    /// Whether the orchestrator may still answer at `now`.
    pub(crate) fn is_valid(&self, now: Instant) -> bool {
        !self.lost && now < self.valid_until
    }

    /// What to do at `now`: step down (asked again, it says so again), send a
    /// renewal (asked once per renewal), or nothing.
    #[must_use]
    pub(crate) fn poll(&mut self, now: Instant) -> Option<Action> {
        if self.lost {
            return Some(Action::StepDown(StepDown::HeldByOther));
        }
        if now >= self.valid_until {
            return Some(Action::StepDown(StepDown::Expired));
        }
        if !self.renewing && now >= self.renew_at {
            self.renewing = true;
            return Some(Action::Renew);
        }
        None
    }

    /// When [`poll`](Self::poll) next has something to say: the next renewal
    /// (unless one is on its way) or the end of the validity, whichever is first.
    #[must_use]
    pub(crate) fn poll_timeout(&self) -> Instant {
        if self.renewing {
            self.valid_until
        } else {
            self.valid_until.min(self.renew_at)
        }
    }

    /// The renewal asked for by [`poll`](Self::poll), sent at `sent`, ended at
    /// `now` with `outcome`.
    pub(crate) fn handle_renewal(&mut self, now: Instant, sent: Instant, outcome: Renewed) {
        self.renewing = false;
        match outcome {
            Renewed::Held => {
                self.valid_until = self.valid_until.max(sent + self.ttl / 2);
                self.renew_at = sent + self.ttl / 3;
            }
            Renewed::HeldByOther => self.lost = true,
            Renewed::Failed => self.renew_at = now + (self.ttl / 12).max(MIN_RETRY),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_millis(1200);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_new_term_renews_at_a_third_and_is_valid_for_half_the_ttl() {
        let t0 = Instant::now();
        let mut lead = Leadership::new(TTL, t0);
        assert_eq!(lead.poll_timeout(), t0 + ms(400));
        assert_eq!(lead.poll(t0), None);
        assert_eq!(lead.poll(t0 + ms(399)), None);
        assert!(lead.is_valid(t0 + ms(599)));
        assert!(!lead.is_valid(t0 + ms(600)));
        assert_eq!(lead.renewal_limit(), ms(400));
        assert_eq!(lead.ttl(), TTL);
    }

    #[test]
    fn a_renewal_is_asked_for_once_until_its_outcome_is_in() {
        let t0 = Instant::now();
        let mut lead = Leadership::new(TTL, t0);
        assert_eq!(lead.poll(t0 + ms(400)), Some(Action::Renew));
        assert_eq!(lead.poll(t0 + ms(450)), None);
        // While it is on its way, only the end of the validity matters.
        assert_eq!(lead.poll_timeout(), t0 + ms(600));
    }

    #[test]
    fn a_successful_renewal_extends_the_term_from_when_it_was_sent() {
        let t0 = Instant::now();
        let mut lead = Leadership::new(TTL, t0);
        assert_eq!(lead.poll(t0 + ms(400)), Some(Action::Renew));
        lead.handle_renewal(t0 + ms(550), t0 + ms(400), Renewed::Held);
        assert!(lead.is_valid(t0 + ms(999)));
        assert!(!lead.is_valid(t0 + ms(1000)));
        assert_eq!(lead.poll_timeout(), t0 + ms(800));
        assert_eq!(lead.poll(t0 + ms(799)), None);
        assert_eq!(lead.poll(t0 + ms(800)), Some(Action::Renew));
    }

    #[test]
    fn a_renewal_never_shortens_the_term() {
        let t0 = Instant::now();
        let mut lead = Leadership::new(TTL, t0 + ms(100));
        assert_eq!(lead.poll(t0 + ms(500)), Some(Action::Renew));
        // Reported as sent before the acquisition (cannot happen, but harmless).
        lead.handle_renewal(t0 + ms(500), t0, Renewed::Held);
        assert!(lead.is_valid(t0 + ms(699)));
    }

    #[test]
    fn a_failed_renewal_is_tried_again_after_a_twelfth_of_the_ttl() {
        let t0 = Instant::now();
        let mut lead = Leadership::new(TTL, t0);
        assert_eq!(lead.poll(t0 + ms(400)), Some(Action::Renew));
        lead.handle_renewal(t0 + ms(450), t0 + ms(400), Renewed::Failed);
        assert_eq!(lead.poll_timeout(), t0 + ms(550));
        assert_eq!(lead.poll(t0 + ms(549)), None);
        assert_eq!(lead.poll(t0 + ms(550)), Some(Action::Renew));
        // The validity did not move.
        assert!(!lead.is_valid(t0 + ms(600)));
    }

    #[test]
    fn a_short_ttl_retries_after_at_least_five_milliseconds() {
        let t0 = Instant::now();
        let mut lead = Leadership::new(ms(30), t0);
        assert_eq!(lead.poll(t0 + ms(10)), Some(Action::Renew));
        lead.handle_renewal(t0 + ms(11), t0 + ms(10), Renewed::Failed);
        assert_eq!(lead.poll_timeout(), t0 + ms(15));
        assert_eq!(
            lead.poll(t0 + ms(15)),
            Some(Action::StepDown(StepDown::Expired))
        );
    }

    #[test]
    fn it_steps_down_when_the_term_runs_out() {
        let t0 = Instant::now();
        let mut lead = Leadership::new(TTL, t0);
        assert_eq!(lead.poll(t0 + ms(400)), Some(Action::Renew));
        assert_eq!(
            lead.poll(t0 + ms(600)),
            Some(Action::StepDown(StepDown::Expired))
        );
        // And keeps saying so.
        assert_eq!(
            lead.poll(t0 + ms(601)),
            Some(Action::StepDown(StepDown::Expired))
        );
    }

    #[test]
    fn it_steps_down_at_once_when_someone_else_holds_the_lease() {
        let t0 = Instant::now();
        let mut lead = Leadership::new(TTL, t0);
        assert_eq!(lead.poll(t0 + ms(400)), Some(Action::Renew));
        lead.handle_renewal(t0 + ms(410), t0 + ms(400), Renewed::HeldByOther);
        assert!(!lead.is_valid(t0 + ms(410)));
        assert_eq!(
            lead.poll(t0 + ms(410)),
            Some(Action::StepDown(StepDown::HeldByOther))
        );
    }
}
