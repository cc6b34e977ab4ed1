//! One serving term: the loop that feeds the bus's messages and the engine's
//! timeouts to the engine, and drives the lease, the saving and the
//! publishing around it.

use super::super::BusEvent;
use super::leadership::{Action, Leadership, StepDown};
use super::publishing::Outbox;
use super::saving::{Loaded, Saving, load_state};
use super::standby::{Renewal, renew};
use super::{Orchestrator, OrchestratorError, Stopped};
use crate::service::log::log_event;
use std::future::Future;
use std::pin::Pin;
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
    pub(super) async fn serve(
        &mut self,
        mut stop: Pin<&mut impl Future<Output = ()>>,
        mut leadership: Option<Leadership>,
    ) -> Result<Term, OrchestratorError> {
        // With a lease, loads and saves are fenced by it.
        let fence = leadership.as_ref().map(|_| self.holder.clone());
        let loaded = match self.store.clone() {
            Some(store) => {
                load_state(
                    &mut self.engine,
                    store.as_ref(),
                    fence.as_deref(),
                    self.discard_unreadable,
                )
                .await?
            }
            None => Loaded { replace: false },
        };
        let mut saving = Saving::start(
            self.store.clone(),
            self.save_interval,
            &self.engine,
            fence,
            loaded,
        );

        let channels = self.engine.config().channels.clone();
        let mut sub = match self
            .bus
            .subscribe(&[channels.announce.clone(), channels.request.clone()])
            .await
        {
            Ok(sub) => sub,
            Err(error) => {
                saving.abort();
                return Err(OrchestratorError::Subscribe(error));
            }
        };
        tracing::info!(announce = %channels.announce, request = %channels.request, "orchestrator ready");

        let outbox = Outbox::start(self.bus.clone());
        let lease = self.lease.as_ref().map(|(lease, _)| lease.clone());
        let mut renewal: Option<Renewal> = None;

        let result = 'serve: loop {
            if let (Some(lead), Some(lease)) = (leadership.as_mut(), &lease) {
                while let Some(action) = lead.poll(now()) {
                    match action {
                        Action::Renew => {
                            renewal = Some(renew(
                                lease.clone(),
                                self.holder.clone(),
                                lead.ttl(),
                                lead.renewal_limit(),
                            ));
                        }
                        Action::StepDown(StepDown::Expired) => {
                            tracing::error!(
                                lease = %lease.describe(),
                                "could not renew the lease in time; stepping down and standing by"
                            );
                            break 'serve Ok(Term::SteppedDown);
                        }
                        Action::StepDown(StepDown::HeldByOther) => {
                            tracing::error!(
                                lease = %lease.describe(),
                                "another orchestrator holds the lease; stepping down and standing by"
                            );
                            break 'serve Ok(Term::SteppedDown);
                        }
                    }
                }
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
            tokio::select! {
                ev = sub.next() => match ev {
                    Some(BusEvent::Message(_))
                        if leadership.as_ref().is_some_and(|lead| !lead.is_valid(now())) =>
                    {
                        // Received while the lease was ours but too late to
                        // answer (say, after a pause): the top of the loop steps down.
                        continue;
                    }
                    Some(BusEvent::Message(m)) => {
                        let now = self.clock.now();
                        self.engine.handle_with_reply(now, &m.channel, &m.payload, m.reply_to.as_deref());
                    }
                    Some(BusEvent::Disconnected { reason }) => {
                        tracing::warn!(%reason, "lost the broker; reconnecting");
                    }
                    Some(BusEvent::Reconnected) => {
                        tracing::info!("broker connection is back; request channels subscribed again");
                    }
                    None => break Err(OrchestratorError::BusClosed),
                },
                _ = sleep => self.engine.handle_timeout(self.clock.now()),
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
                    // The top of the loop acts on the outcome.
                    continue;
                }
                () = sleep_until_some(lease_wake) => {
                    // The top of the loop asks the leadership what is due.
                }
                () = stop.as_mut() => {
                    tracing::info!("stop requested");
                    break Ok(Term::Ended(Stopped::Stopped));
                }
            }
            while let Some(ev) = self.engine.poll_event() {
                log_event(&ev);
            }
            let mut closed = false;
            while let Some(tx) = self.engine.poll_transmit() {
                if outbox.send(tx).await.is_err() {
                    closed = true;
                }
            }
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
        // Replies already produced answer requests of this term: send them.
        outbox.finish().await;
        if matches!(result, Ok(Term::SteppedDown)) {
            // Someone else may hold the lease now and save: save nothing more.
            saving.abort();
        } else {
            saving.finish(&self.engine, valid_until(leadership.as_ref())).await;
        }
        result
    }
}

/// Until when a term may still write its state (with a lease).
fn valid_until(leadership: Option<&Leadership>) -> Option<Instant> {
    leadership.map(|lead| Instant::from_std(lead.valid_until()))
}

/// Sleeps until `at`, or forever if it is `None`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
