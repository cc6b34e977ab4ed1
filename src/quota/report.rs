//! [`Quotas::report`]: taking in what a platform said about a key's quota
//! ([`Reported`]), and the lease a REPORT returns ([`LeaseReturn`]).

use super::view::window_order;
use super::{Observation, QuotaView, Quotas, Source};
use crate::time::Timestamp;

/// What a worker says about a lease in a REPORT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseReturn {
    /// The lease.
    pub lease_id: u64,
    /// Calls made with it (all of them when not said).
    pub used: Option<u64>,
    /// Whether the lease ends now (its unused calls return to the account).
    pub done: bool,
}

/// What a report did to the view of its account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    /// The view now says what the report said.
    Updated,
    /// The report was older than what is known; it could only lower the count,
    /// and did.
    Lowered,
    /// The report was older than what is known (or about another resource, or
    /// said nothing about the quota); the view is unchanged.
    Ignored,
}

impl Quotas {
    /// Takes in what the platform said about `key`'s quota at `now`, and ends
    /// the lease the report is about when it says `done` (a lease of another
    /// key is left alone). Returns what the report did to the view.
    pub fn report(
        &mut self,
        now: Timestamp,
        platform: &str,
        key: &str,
        obs: &Observation,
        lease: Option<LeaseReturn>,
    ) -> Reported {
        self.report_from(now, platform, key, obs, lease, Source::Report)
    }

    /// [`report`](Self::report), learnt from `source` (a worker's
    /// [`Source::Report`] or a [`Source::Probe`]); the view says which.
    pub fn report_from(
        &mut self,
        now: Timestamp,
        platform: &str,
        key: &str,
        obs: &Observation,
        lease: Option<LeaseReturn>,
        source: Source,
    ) -> Reported {
        let account = self.account_of(platform, key);
        self.tracking(platform, &account, |q| {
            q.report_untracked(now, platform, key, obs, lease, source)
        })
    }

    fn report_untracked(
        &mut self,
        now: Timestamp,
        platform: &str,
        key: &str,
        obs: &Observation,
        lease: Option<LeaseReturn>,
        source: Source,
    ) -> Reported {
        // Older than what is known: an earlier `Date` than a report already
        // taken, or than calls counted since (a response that waited to be
        // reported while another lease ended). Judged before the lease this
        // report returns is ended (the response came after that lease's calls,
        // so it is not older than their count), and with the skew known before
        // it, unless none is known yet: the first `Date` teaches it. Such a
        // report teaches no skew.
        let older = self.is_older(now, platform, key, obs);
        if let Some(ret) = lease
            && ret.done
            && self
                .leases
                .get(&ret.lease_id)
                .is_some_and(|l| l.platform == platform && l.key == key)
        {
            self.end_lease(now, ret.lease_id, ret.used);
        }
        let p = self.platforms.entry(platform.to_string()).or_default();
        let account = p.account_of(key);
        if obs.remaining.is_none() && obs.server_date.is_none() && obs.limit.is_none() {
            if p.members.is_empty() && p.accounts.is_empty() {
                self.platforms.remove(platform);
            }
            return Reported::Ignored;
        }
        p.burn_since.get_or_insert(now);
        let state = p.accounts.entry(account).or_default();
        state.roll(now);
        if let Some(date) = obs.server_date
            && !older
        {
            state.skew.observe(date, now);
        }
        let skew = state.skew;
        let Some(remaining) = obs.remaining else {
            if let (Some(view), Some(limit)) = (&mut state.view, obs.limit) {
                view.limit = Some(limit);
            }
            return Reported::Ignored;
        };
        let reset = obs.reset.map(|r| skew.reset_to_local(r));
        // A window that has ended says nothing of the current one.
        if reset.is_some_and(|r| r <= now) {
            return Reported::Ignored;
        }
        let fresh_view = QuotaView {
            limit: obs.limit,
            remaining,
            reset,
            reset_header: obs.reset,
            observed_at: now,
            source,
            spent: 0,
            server_date: obs.server_date,
            spent_at: None,
            resource: obs.resource.clone(),
        };
        let Some(view) = &mut state.view else {
            state.view = Some(fresh_view);
            return Reported::Updated;
        };
        if let (Some(mine), Some(theirs)) = (&view.resource, &obs.resource)
            && mine != theirs
        {
            return Reported::Ignored;
        }
        let before = view.remaining_now(now);
        // Which window is the report about? The reset headers say it (the same
        // window has the same header); without them, the converted times.
        let order = match (obs.reset, view.reset_header, reset, view.reset) {
            (Some(a), Some(b), _, _)
            | (None, _, Some(a), Some(b))
            | (_, None, Some(a), Some(b)) => window_order(a, b),
            (Some(_), None, _, None) => std::cmp::Ordering::Equal,
            // No reset said: a report after the known reset is of a new window.
            (None, _, _, _) if view.has_reset(now) => std::cmp::Ordering::Greater,
            _ => std::cmp::Ordering::Equal,
        };
        // A rolled view (reset passed, header kept) is past its header's window.
        let rolled = view.reset.is_none() && view.reset_header.is_some();
        if order == std::cmp::Ordering::Less
            || (rolled && obs.reset.is_some() && order == std::cmp::Ordering::Equal)
        {
            return Reported::Ignored;
        }
        if order == std::cmp::Ordering::Greater || view.source == Source::Hint {
            let resource = view.resource.clone().or(fresh_view.resource.clone());
            let limit = fresh_view.limit.or(view.limit);
            *view = QuotaView {
                limit,
                resource,
                ..fresh_view
            };
            // A new window, or the first report after a hint: what it says
            // less what was assumed is no call spent.
            return Reported::Updated;
        }
        let outcome = if older {
            match before {
                Some(b) if remaining < b => {
                    view.remaining = remaining;
                    view.spent = 0;
                    view.source = source;
                    Reported::Lowered
                }
                _ => return Reported::Ignored,
            }
        } else {
            view.remaining = remaining;
            view.spent = 0;
            view.observed_at = now;
            view.source = source;
            view.server_date = obs.server_date.max(view.server_date);
            if reset.is_some() {
                view.reset = reset;
                view.reset_header = obs.reset;
            }
            Reported::Updated
        };
        view.limit = obs.limit.or(view.limit);
        if let Some(b) = before {
            p.record_burn(now, b.saturating_sub(remaining));
        }
        outcome
    }
}

impl Quotas {
    /// Whether `obs`, received at `now` for `key`, is older than what is known
    /// of its account: see [`report`](Self::report).
    fn is_older(&self, now: Timestamp, platform: &str, key: &str, obs: &Observation) -> bool {
        let Some(date) = obs.server_date else {
            return false;
        };
        let account = self.account_of(platform, key);
        let Some(state) = self.account(platform, &account) else {
            return false;
        };
        let Some(view) = &state.view else {
            return false;
        };
        let mut skew = state.skew;
        if skew.samples == 0 {
            skew.observe(date, now);
        }
        view.server_date.is_some_and(|known| date < known)
            || view.spent_at.is_some_and(|t| {
                date.as_millis().saturating_add(1000) < skew.to_platform(t).as_millis()
            })
    }
}
