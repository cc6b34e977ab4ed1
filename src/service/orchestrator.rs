//! [`Orchestrator`]: runs an [`Engine`] over a [`Bus`].

use super::{Bus, BusError, BusEvent, StateStore, SystemClock, random_seed};
use crate::engine::{Engine, EngineConfig, Event, KeyEvent, Transmit};
use crate::pool::PoolSnapshot;
use crate::rng::SplitMix64;
use crate::time::{Clock, Timestamp};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Why [`Orchestrator::run`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrchestratorError {
    /// The request channels could not be subscribed.
    #[error("could not subscribe the request channels: {0}")]
    Subscribe(BusError),
    /// The bus was closed under the orchestrator.
    #[error("the bus was closed")]
    BusClosed,
    /// The saved state could not be read (the store is unreachable); starting
    /// empty would overwrite it, so the orchestrator does not start.
    #[error("could not load the saved state from {store}: {error}")]
    LoadState {
        /// Where the state is kept.
        store: String,
        /// Why it could not be read.
        error: BusError,
    },
}

/// How [`Orchestrator::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// A SHUTDOWN message was handled.
    Shutdown,
    /// The `stop` future given to [`Orchestrator::run_until`] completed (a signal).
    Stopped,
}

/// The key orchestrator as a service: subscribes both request channels, feeds
/// each message to an [`Engine`] with the current wall-clock time, publishes the
/// engine's replies, wakes up when the engine asks, and stops cleanly on
/// SHUTDOWN or when told to.
pub struct Orchestrator {
    bus: Arc<dyn Bus>,
    engine: Engine<SplitMix64>,
    clock: Arc<dyn Clock>,
    store: Option<Arc<dyn StateStore>>,
    save_interval: Duration,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("config", self.engine.config())
            .finish()
    }
}

/// How long changes wait before they are saved, by default.
pub const DEFAULT_SAVE_INTERVAL: Duration = Duration::from_millis(200);

/// How many replies may wait to be published before the orchestrator stops
/// reading new requests (back-pressure, bounded memory).
const OUTBOX: usize = 4096;

impl Orchestrator {
    /// An orchestrator over `bus` with an empty pool and a random seed.
    pub fn new(bus: Arc<dyn Bus>, config: EngineConfig) -> Self {
        Self::with_engine(bus, Engine::new(config, SplitMix64::new(random_seed())))
    }

    /// An orchestrator over `bus` driving the given engine (for example one whose
    /// pool was restored, or one with a fixed seed).
    pub fn with_engine(bus: Arc<dyn Bus>, engine: Engine<SplitMix64>) -> Self {
        Self {
            bus,
            engine,
            clock: Arc::new(SystemClock),
            store: None,
            save_interval: DEFAULT_SAVE_INTERVAL,
        }
    }

    /// Keeps the pool's state in `store`: loaded when [`run`](Self::run)
    /// starts, saved after changes (at most every save interval, and once more
    /// on the way out), so that keys and their states survive a restart.
    pub fn with_store(mut self, store: Arc<dyn StateStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// How long changes may wait before they are saved (default 200 ms): what
    /// a crash can lose.
    pub fn with_save_interval(mut self, interval: Duration) -> Self {
        self.save_interval = interval;
        self
    }

    async fn load_state(&mut self, store: &dyn StateStore) -> Result<(), OrchestratorError> {
        let loaded = store
            .load()
            .await
            .map_err(|error| OrchestratorError::LoadState {
                store: store.describe(),
                error,
            })?;
        match loaded {
            None => tracing::info!(store = %store.describe(), "no saved state; starting empty"),
            Some(bytes) => match serde_json::from_slice::<PoolSnapshot>(&bytes) {
                Ok(snapshot) => {
                    self.engine.restore(&snapshot);
                    let keys: usize = snapshot
                        .platforms
                        .iter()
                        .map(|p| p.fresh.len() + p.expired.len() + p.invalid.len())
                        .sum();
                    tracing::info!(
                        store = %store.describe(),
                        platforms = snapshot.platforms.len(),
                        keys,
                        "state restored"
                    );
                }
                Err(e) => tracing::error!(
                    store = %store.describe(),
                    error = %e,
                    "the saved state is unreadable; starting empty (it will be overwritten)"
                ),
            },
        }
        Ok(())
    }

    /// Uses `clock` instead of the system's wall clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Runs until a SHUTDOWN message is handled.
    pub async fn run(self) -> Result<Stopped, OrchestratorError> {
        self.run_until(std::future::pending::<()>()).await
    }

    /// Runs until a SHUTDOWN message is handled or `stop` completes (for example
    /// on SIGINT or SIGTERM). Either way, every reply already produced is
    /// published before this returns.
    pub async fn run_until(
        mut self,
        stop: impl Future<Output = ()>,
    ) -> Result<Stopped, OrchestratorError> {
        if let Some(store) = self.store.clone() {
            self.load_state(store.as_ref()).await?;
        }
        let (save_tx, save_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
        let saver = self
            .store
            .clone()
            .map(|store| tokio::spawn(save_loop(store, save_rx)));
        let mut saved_changes = self.engine.stats().changes;
        let mut save_at: Option<tokio::time::Instant> = None;

        let channels = self.engine.config().channels.clone();
        let mut sub = self
            .bus
            .subscribe(&[channels.announce.clone(), channels.request.clone()])
            .await
            .map_err(OrchestratorError::Subscribe)?;
        tracing::info!(announce = %channels.announce, request = %channels.request, "orchestrator ready");

        let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Transmit>(OUTBOX);
        let publisher = tokio::spawn(publish_loop(self.bus.clone(), out_rx));
        tokio::pin!(stop);

        let result = loop {
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
            tokio::select! {
                ev = sub.next() => match ev {
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
                _ = async {
                    match save_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending::<()>().await,
                    }
                } => {
                    save_at = None;
                    if self.engine.stats().changes != saved_changes
                        && save_tx.try_send(self.snapshot_bytes()).is_ok()
                    {
                        saved_changes = self.engine.stats().changes;
                    }
                }
                _ = &mut stop => {
                    tracing::info!("stop requested");
                    break Ok(Stopped::Stopped);
                }
            }
            while let Some(ev) = self.engine.poll_event() {
                log_event(&ev);
            }
            let mut closed = false;
            while let Some(tx) = self.engine.poll_transmit() {
                if out_tx.send(tx).await.is_err() {
                    closed = true;
                }
            }
            if closed {
                break Err(OrchestratorError::BusClosed);
            }
            if self.store.is_some()
                && save_at.is_none()
                && self.engine.stats().changes != saved_changes
            {
                save_at = Some(tokio::time::Instant::now() + self.save_interval);
            }
            if self.engine.is_shutdown() {
                break Ok(Stopped::Shutdown);
            }
        };
        drop(out_tx);
        let _ = publisher.await;
        if let Some(saver) = saver {
            if self.engine.stats().changes != saved_changes {
                let _ = save_tx.send(self.snapshot_bytes()).await;
            }
            drop(save_tx);
            let _ = saver.await;
        }
        let stats = self.engine.stats();
        tracing::info!(
            handled = stats.handled,
            rejected = stats.rejected,
            assigned = stats.assigned,
            waits = stats.waits,
            errors = stats.errors,
            "orchestrator stopped"
        );
        result
    }
}

/// The most replies published at once (pipelined on the broker connection).
const PUBLISH_BATCH: usize = 64;

/// Publishes the engine's replies: whatever has queued up is sent together, so
/// the broker connection is pipelined instead of waiting a round trip per reply.
/// Within a batch the publishes are issued in order.
pub(crate) fn snapshot_json(engine: &Engine<SplitMix64>) -> Vec<u8> {
    // A snapshot is strings and numbers: serializing it cannot fail.
    serde_json::to_vec(&engine.pool().snapshot()).unwrap_or_default()
}

impl Orchestrator {
    fn snapshot_bytes(&self) -> Vec<u8> {
        snapshot_json(&self.engine)
    }
}

/// Saves the snapshots it is sent, in order; a failed save is tried again (every
/// second, with the newest snapshot) until one succeeds.
async fn save_loop(store: Arc<dyn StateStore>, mut rx: tokio::sync::mpsc::Receiver<Vec<u8>>) {
    while let Some(mut state) = rx.recv().await {
        loop {
            match store.save(&state).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(store = %store.describe(), error = %e, "could not save the state; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    match rx.try_recv() {
                        Ok(newer) => state = newer,
                        Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {}
                        Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {}
                    }
                }
            }
        }
    }
}

async fn publish_loop(bus: Arc<dyn Bus>, mut rx: tokio::sync::mpsc::Receiver<Transmit>) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    while rx.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        let sends = batch.iter().map(|tx| bus.publish(&tx.channel, &tx.payload));
        let results = futures_util::future::join_all(sends).await;
        for (tx, result) in batch.iter().zip(results) {
            if let Err(e) = result {
                // The requester waits with a deadline and asks again; nothing else to do.
                tracing::warn!(channel = %tx.channel, error = %e, "could not publish a reply");
            }
        }
        batch.clear();
    }
}

fn log_event(ev: &Event) {
    match ev {
        Event::Rejected { channel, error } => {
            tracing::warn!(%channel, %error, "dropped a message");
        }
        Event::UnknownChannel { channel } => {
            tracing::warn!(%channel, "message on a channel this orchestrator does not serve");
        }
        Event::UnknownPlatform { platform } => {
            tracing::warn!(%platform, "key requested for a platform with no published keys");
        }
        Event::Key {
            platform,
            key,
            what,
        } => match what {
            KeyEvent::Published => tracing::info!(%platform, %key, "key published"),
            KeyEvent::Revived => tracing::info!(%platform, %key, "invalid key published again"),
            KeyEvent::Unpublished => tracing::info!(%platform, %key, "key unpublished"),
            KeyEvent::Expired(until) => {
                tracing::debug!(%platform, %key, until = %Timestamp::as_secs(*until), "key rate limited")
            }
            KeyEvent::Invalidated => tracing::warn!(%platform, %key, "key invalidated"),
        },
        Event::Shutdown => tracing::info!("SHUTDOWN received"),
    }
}
