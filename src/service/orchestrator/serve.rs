//! One serving term: the loop that feeds the bus's messages and the engine's
//! timeouts to the engine, and drives the lease, the saving and the
//! publishing around it.

use super::super::BusEvent;
use super::super::Lease;
use super::leadership::{Action, Leadership, StepDown};
use super::publishing::Outbox;
use super::saving::{Loaded, Saving, load_state};
use super::standby::{Renewal, Watch, renew};
use super::{FINAL_PUBLISH_LIMIT, FINAL_SAVE_LIMIT, Orchestrator, OrchestratorError, Stopped};
use crate::probe::{ProbeAnswer, ProbeOutcome};
use crate::service::log::log_event;
use crate::service::probe::ProbeRunner;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How one serving term ended.
pub(super) enum Term {
    /// SHUTDOWN or `stop`: the orchestrator is done.
    Ended(Stopped),
    /// The lease was lost: stand by again.
    SteppedDown,
}

/// The time now, for [`Leadership`] (which counts in the standard library's instants).
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl Orchestrator {
    /// One serving term: loads the state, subscribes, and serves until
    /// SHUTDOWN, `stop`, or (with a lease) the lease is lost.
    ///
    /// With the `watch` of a standby that took over, it serves from the
    /// watch's subscription instead, and first feeds the engine what the
    /// watch saw and nobody answered: the state changes and the unanswered
    /// requests, in arrival order, before anything new.
    pub(super) async fn serve(
        &mut self,
        mut stop: Pin<&mut impl Future<Output = ()>>,
        mut leadership: Option<Leadership>,
        watch: Option<Watch>,
    ) -> Result<Term, OrchestratorError> {
        // With a lease, loads and saves are fenced by it.
        let fence = leadership.as_ref().map(|_| self.holder.clone());
        let lease = self.lease.as_ref().map(|(lease, _)| lease.clone());
        let holder = self.holder.clone();
        // A renewal sent while loading or catching up, taken over by the loop.
        let mut renewal: Option<Renewal> = None;
        // Neither the store nor the broker may keep a stop waiting, and the
        // lease is kept meanwhile (a large state may take longer to load than
        // the lease lasts).
        let loaded = match self.store.clone() {
            Some(store) => {
                let loading = load_state(
                    &mut self.engine,
                    store.as_ref(),
                    fence.as_deref(),
                    self.discard_unreadable,
                );
                tokio::select! {
                    kept = keeping_lease(leadership.as_mut(), lease.as_ref(), &holder, &mut renewal, loading) => match kept {
                        Ok(loaded) => loaded?,
                        Err(why) => return Ok(step_down(why, lease.as_ref(), "loading the state")),
                    },
                    () = stop.as_mut() => {
                        tracing::info!("stop requested while loading the state");
                        return Ok(Term::Ended(Stopped::Stopped));
                    }
                }
            }
            None => Loaded { replace: false },
        };
        // What the store holds now: the changes replayed from the standby's
        // window below come after it and must be saved.
        let stored_generation = self.engine.state_generation();
        let channels = self.engine.config().channels.clone();
        let both = [channels.announce.clone(), channels.request.clone()];
        let mut replayed = false;
        let mut sub = match watch {
            Some(mut watch) => {
                let catching_up = self.catch_up(&mut watch);
                tokio::select! {
                    kept = keeping_lease(leadership.as_mut(), lease.as_ref(), &holder, &mut renewal, catching_up) => {
                        if let Err(why) = kept {
                            return Ok(step_down(why, lease.as_ref(), "taking over"));
                        }
                    }
                    () = stop.as_mut() => {
                        tracing::info!("stop requested while taking over");
                        return Ok(Term::Ended(Stopped::Stopped));
                    }
                }
                if leadership.as_ref().is_none_or(|lead| lead.is_valid(now())) {
                    self.replay(&mut watch);
                    replayed = true;
                }
                watch.sub
            }
            None => {
                let subscribed = tokio::select! {
                    subscribed = self.bus.subscribe(&both) => subscribed,
                    () = stop.as_mut() => {
                        tracing::info!("stop requested while subscribing");
                        return Ok(Term::Ended(Stopped::Stopped));
                    }
                };
                subscribed.map_err(OrchestratorError::Subscribe)?
            }
        };
        let mut saving = Saving::start(
            self.store.clone(),
            self.save_interval,
            stored_generation,
            fence,
            loaded,
        );
        tracing::info!(announce = %channels.announce, request = %channels.request, "orchestrator ready");
        self.meter.serving(&mut self.engine, self.clock.now());
        // The message being handled, for the metrics.
        let mut seen = None;

        // Replies go out only while the term's lease is valid.
        let (validity, valid_until_rx) =
            tokio::sync::watch::channel(answer_until(leadership.as_ref()));
        let outbox = Outbox::start(self.bus.clone(), valid_until_rx);
        // The probes of this term: answers to an earlier term's are dropped with it.
        let max_probes = self
            .engine
            .config()
            .probe
            .as_ref()
            .map_or(1, |p| p.max_in_flight);
        let mut probes = self
            .prober
            .clone()
            .map(|prober| ProbeRunner::new(prober, max_probes));

        let result = 'serve: loop {
            if let Err(why) = poll_lease(leadership.as_mut(), lease.as_ref(), &holder, &mut renewal)
            {
                break 'serve Ok(step_down(why, lease.as_ref(), "serving"));
            }
            let wake = self.engine.poll_timeout();
            let sleep = async {
                match wake {
                    Some(at) => {
                        let now = self.clock.now();
                        tokio::time::sleep(at.saturating_since(now) + Duration::from_millis(1))
                            .await
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let lease_wake = leadership
                .as_ref()
                .map(|lead| Instant::from_std(lead.poll_timeout()));
            let save_at = saving.save_at();
            let observe_at = self.meter.observe_at();
            tokio::select! {
                // What the takeover fed the engine is published below first.
                () = std::future::ready(()), if replayed => replayed = false,
                ev = sub.next() => match ev {
                    Some(BusEvent::Message(m))
                        if m.channel != channels.announce && m.channel != channels.request =>
                    {
                        // A reply channel, watched by the standby this term took over from.
                    }
                    Some(BusEvent::Message(_))
                        if leadership.as_ref().is_some_and(|lead| !lead.is_valid(now())) =>
                    {
                        // Received while the lease was ours but too late to
                        // answer (say, after a pause): the top of the loop steps down.
                        continue;
                    }
                    Some(BusEvent::Message(m)) => {
                        let now = self.clock.now();
                        seen = self.meter.message(&self.engine, &m.channel, &m.payload, m.reply_to.as_deref(), std::time::Instant::now());
                        self.engine.handle_with_reply(now, &m.channel, &m.payload, m.reply_to.as_deref());
                    }
                    Some(BusEvent::Disconnected { reason }) => {
                        tracing::warn!(%reason, "lost the broker; reconnecting");
                        self.meter.broker(false);
                    }
                    Some(BusEvent::Reconnected) => {
                        tracing::info!("broker connection is back; request channels subscribed again");
                        self.meter.broker(true);
                    }
                    None => break Err(OrchestratorError::BusClosed),
                },
                _ = sleep => self.engine.handle_timeout(self.clock.now()),
                Some(answer) = async {
                    match probes.as_mut() {
                        Some(runner) => runner.next().await,
                        None => std::future::pending().await,
                    }
                } => self.engine.handle_probe(self.clock.now(), answer),
                () = sleep_until_some(save_at) => saving.handle_due(&self.engine, valid_until(leadership.as_ref())),
                (sent, outcome) = async {
                    match renewal.as_mut() {
                        Some(renewal) => renewal.await,
                        None => std::future::pending().await,
                    }
                }, if renewal.is_some() => {
                    renewal = None;
                    if let Some(lead) = leadership.as_mut() {
                        lead.handle_renewal(now(), sent.into_std(), outcome);
                    }
                    validity.send_replace(answer_until(leadership.as_ref()));
                    // The top of the loop acts on the outcome.
                    continue;
                }
                () = sleep_until_some(lease_wake) => {
                    // The top of the loop asks the leadership what is due.
                }
                () = sleep_until_some(observe_at) => {
                    // The metrics take the key counts below.
                }
                () = stop.as_mut() => {
                    tracing::info!("stop requested");
                    break Ok(Term::Ended(Stopped::Stopped));
                }
            }
            while let Some(ev) = self.engine.poll_event() {
                log_event(&ev);
                self.meter.event(&ev);
            }
            let mut closed = false;
            while let Some(tx) = self.engine.poll_transmit() {
                self.meter.reply(&self.engine, &tx, seen.as_mut());
                // A full outbox (the broker does not take replies) waits, but
                // not past a stop.
                tokio::select! {
                    sent = outbox.send(tx) => closed |= sent.is_err(),
                    () = stop.as_mut() => {
                        tracing::info!("stop requested");
                        break 'serve Ok(Term::Ended(Stopped::Stopped));
                    }
                }
            }
            while let Some(request) = self.engine.poll_probe() {
                match probes.as_ref() {
                    Some(runner) => runner.start(request),
                    // Probing configured with nobody to probe: it fails, and
                    // the engine backs off.
                    None => self.engine.handle_probe(
                        self.clock.now(),
                        ProbeAnswer {
                            id: request.id,
                            outcome: ProbeOutcome::Failed,
                        },
                    ),
                }
            }
            self.meter
                .handled(&mut self.engine, seen.take(), self.clock.now());
            if closed {
                break Err(OrchestratorError::BusClosed);
            }
            saving.schedule(&self.engine);
            if self.engine.is_shutdown() {
                break Ok(Term::Ended(Stopped::Shutdown));
            }
        };
        // Stop answering first: requests not yet read are left to the next holder.
        drop(sub);
        // Replies already produced answer requests of this term: send them
        // (bounded: the broker may be gone).
        outbox.finish(FINAL_PUBLISH_LIMIT).await;
        if matches!(result, Ok(Term::SteppedDown)) {
            // Someone else may hold the lease now and save: save nothing more.
            saving.abort();
        } else if let Err(unsaved) = saving
            .finish(
                &self.engine,
                valid_until(leadership.as_ref()),
                FINAL_SAVE_LIMIT,
            )
            .await
        {
            tracing::error!(
                store = %self.store.as_ref().map(|s| s.describe()).unwrap_or_default(),
                unsaved_changes = unsaved.changes,
                "could not save the state within {FINAL_SAVE_LIMIT:?}; the changes made since the last successful save are lost"
            );
        }
        result
    }
}

/// Until when a term may still write its state (with a lease).
fn valid_until(leadership: Option<&Leadership>) -> Option<Instant> {
    leadership.map(|lead| Instant::from_std(lead.valid_until()))
}

/// Until when a term may still publish replies (with a lease): as
/// [`valid_until`], and no longer once the lease is known to be another's.
fn answer_until(leadership: Option<&Leadership>) -> Option<Instant> {
    leadership.map(|lead| {
        if lead.is_valid(now()) {
            Instant::from_std(lead.valid_until())
        } else {
            Instant::now()
        }
    })
}

impl Orchestrator {
    /// Feeds the engine what `watch` saw while standing by and nobody
    /// answered, in arrival order, and logs what it could not.
    fn replay(&mut self, watch: &mut Watch) {
        let replay = watch.window.take(now());
        let dropped = replay.dropped;
        if dropped.requests_too_old > 0 || dropped.changes_too_old > 0 {
            tracing::warn!(
                requests = dropped.requests_too_old,
                changes = dropped.changes_too_old,
                "taking over: messages seen while standing by were older than the window; these requests are not answered"
            );
        }
        if dropped.requests_after_gap > 0 {
            tracing::warn!(
                requests = dropped.requests_after_gap,
                "taking over: requests seen before a gap in the watch are not answered (their replies may have been missed)"
            );
        }
        let requests = replay.requests;
        let changes = replay.messages.len() - requests;
        tracing::info!(
            requests,
            changes,
            "taking over: answering the requests nobody answered and applying the state changes seen while standing by"
        );
        for message in replay.messages {
            let now = self.clock.now();
            self.engine.handle_with_reply(
                now,
                &message.channel,
                &message.payload,
                message.reply_to.as_deref(),
            );
        }
    }
}

/// Runs `work` while keeping the lease of `lead`: sends the renewals it asks
/// for and takes in their outcomes; a renewal still on its way when `work`
/// is done is left in `renewal` for the serve loop. `Err` if the term ended
/// meanwhile (`work` is dropped). Without a lease, just runs `work`.
async fn keeping_lease<T>(
    lead: Option<&mut Leadership>,
    lease: Option<&Arc<dyn Lease>>,
    holder: &str,
    renewal: &mut Option<Renewal>,
    work: impl Future<Output = T>,
) -> Result<T, StepDown> {
    let (Some(lead), Some(lease)) = (lead, lease) else {
        return Ok(work.await);
    };
    let mut work = std::pin::pin!(work);
    loop {
        poll_lease(Some(&mut *lead), Some(lease), holder, renewal)?;
        let wake = Instant::from_std(lead.poll_timeout());
        tokio::select! {
            done = &mut work => return Ok(done),
            (sent, outcome) = async {
                match renewal.as_mut() {
                    Some(renewal) => renewal.await,
                    None => std::future::pending().await,
                }
            }, if renewal.is_some() => {
                *renewal = None;
                lead.handle_renewal(now(), sent.into_std(), outcome);
            }
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// Does what the leadership asks for now: starts a renewal of `lease` into
/// `renewal`, or says why the term ends.
fn poll_lease(
    lead: Option<&mut Leadership>,
    lease: Option<&Arc<dyn Lease>>,
    holder: &str,
    renewal: &mut Option<Renewal>,
) -> Result<(), StepDown> {
    let (Some(lead), Some(lease)) = (lead, lease) else {
        return Ok(());
    };
    while let Some(action) = lead.poll(now()) {
        match action {
            Action::Renew => {
                *renewal = Some(renew(
                    lease.clone(),
                    holder.to_owned(),
                    lead.ttl(),
                    lead.renewal_limit(),
                ));
            }
            Action::StepDown(why) => return Err(why),
        }
    }
    Ok(())
}

/// Logs why the term ends while `doing`, and ends it.
fn step_down(why: StepDown, lease: Option<&Arc<dyn Lease>>, doing: &str) -> Term {
    let lease = lease.map(|l| l.describe()).unwrap_or_default();
    match why {
        StepDown::Expired => tracing::error!(
            %lease,
            "could not renew the lease in time while {doing}; stepping down and standing by"
        ),
        StepDown::HeldByOther => tracing::error!(
            %lease,
            "another orchestrator holds the lease (found while {doing}); stepping down and standing by"
        ),
    }
    Term::SteppedDown
}

/// Sleeps until `at`, or forever if it is `None`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
