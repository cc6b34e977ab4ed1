//! Probes, the service side: performing the calls the
//! [`Engine`](crate::Engine) asks for ([`Engine::poll_probe`](crate::Engine::poll_probe))
//! and feeding the answers back. The engine decides everything (which key,
//! when, at what rate, what an answer does); a [`Prober`] only asks the
//! platform and says what it answered.
//!
//! - [`Prober`]: the trait of one probe: a [`ProbeRequest`] in, a
//!   [`ProbeOutcome`] out. The orchestrator takes any
//!   ([`Orchestrator::with_prober`](crate::service::Orchestrator::with_prober)).
//! - [`HttpProber`] (feature `probe`): GitHub's `GET {api}/rate_limit` and
//!   `GET {api}/user`, GitLab's `GET {api}/api/v4/personal_access_tokens/self`,
//!   over HTTPS with reqwest (rustls), with connect and total timeouts,
//!   retries with backoff, `HTTPS_PROXY` / `NO_PROXY` honoured, and a
//!   `User-Agent` naming keyman and its version. The token goes only into the
//!   `Authorization` header (marked sensitive); no error, log line or panic
//!   message carries it.
//! - `ProbeRunner` (crate-internal): starts each probe as its own task and
//!   collects the answers for the serve loop.

use crate::probe::{ProbeAnswer, ProbeOutcome, ProbeRequest};
use async_trait::async_trait;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc};

#[cfg(feature = "probe")]
mod github;
#[cfg(feature = "probe")]
mod gitlab;
#[cfg(feature = "probe")]
mod http;

#[cfg(feature = "probe")]
pub use http::{
    DEFAULT_GITHUB_API, DEFAULT_GITLAB_API, HttpProber, HttpProberConfig, ProbeError,
    ProbeSetupError, user_agent,
};

/// Asks a platform about one token. Implementations never fail: whatever goes
/// wrong is [`ProbeOutcome::Failed`] (or `Throttled`), and the engine tries
/// again later.
#[async_trait]
pub trait Prober: Send + Sync {
    /// What the platform says about `request.key`.
    async fn probe(&self, request: &ProbeRequest) -> ProbeOutcome;
}

/// Runs the probes of one serving term, each in its own task (at most
/// `max_in_flight` at once), and hands their answers back in the order they
/// come. Dropping it drops the answers still to come: a new term's engine
/// never sees an answer to a probe of the term before.
pub(crate) struct ProbeRunner {
    prober: Arc<dyn Prober>,
    slots: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<ProbeAnswer>,
    rx: mpsc::UnboundedReceiver<ProbeAnswer>,
}

impl ProbeRunner {
    pub(crate) fn new(prober: Arc<dyn Prober>, max_in_flight: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            prober,
            slots: Arc::new(Semaphore::new(max_in_flight.max(1))),
            tx,
            rx,
        }
    }

    /// Starts `request`.
    pub(crate) fn start(&self, request: ProbeRequest) {
        let (prober, slots, tx) = (self.prober.clone(), self.slots.clone(), self.tx.clone());
        tokio::spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            let outcome = prober.probe(&request).await;
            // The term may have ended: then nobody wants the answer.
            let _ = tx.send(ProbeAnswer {
                id: request.id,
                outcome,
            });
        });
    }

    /// The next answer (waits for one).
    pub(crate) async fn next(&mut self) -> Option<ProbeAnswer> {
        self.rx.recv().await
    }
}
