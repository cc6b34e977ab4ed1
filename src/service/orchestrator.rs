//! [`Orchestrator`]: runs an [`Engine`] over a [`Bus`].

use super::{Bus, BusError, BusEvent, Lease, StateStore, SystemClock, random_seed};
use crate::engine::{Engine, EngineConfig, Event, KeyEvent, Transmit};
use crate::pool::PoolSnapshot;
use crate::rng::SplitMix64;
use crate::time::{Clock, Timestamp};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

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
///
/// # Standby
///
/// With a [`Lease`] ([`with_lease`](Self::with_lease)), several orchestrators
/// can run on one broker and only the holder of the lease serves; the others
/// stand by and take over when it stops renewing it (it died, or lost the
/// broker). The serving one renews the lease every `ttl / 3` and stops
/// answering (drops its subscription, saves nothing more) once no renewal sent
/// within the last `ttl / 2` has succeeded, or as soon as a renewal says that
/// someone else holds it. Since the lease stays valid for `ttl` after the
/// start of its last successful renewal, the old holder has stopped answering
/// at least `ttl / 2` before anyone else can take the lease: two orchestrators
/// never answer at the same time, and no request is handled by both, as long
/// as the lease's own clock (the Redis server's, or for NATS the
/// orchestrators' wall clocks) runs at most `ttl / 2` apart from the
/// orchestrator's. (A message received in time but read too late, after a
/// pause of the process, is dropped rather than answered.) Replies produced
/// before stepping down are still published, and a save already on its way to
/// the store may still land; nothing is saved afterwards. A standby tries every `ttl / 3`, so it takes
/// over within about `ttl + ttl / 3` of the last renewal of a holder that died,
/// and within `ttl / 3` of one that stopped cleanly (which releases the lease).
pub struct Orchestrator {
    bus: Arc<dyn Bus>,
    engine: Engine<SplitMix64>,
    clock: Arc<dyn Clock>,
    store: Option<Arc<dyn StateStore>>,
    save_interval: Duration,
    lease: Option<(Arc<dyn Lease>, Duration)>,
    holder: String,
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

/// The shortest lease time to live [`Orchestrator::with_lease`] accepts.
pub const MIN_LEASE_TTL: Duration = Duration::from_millis(30);
/// The longest lease time to live; longer ones are cut to it.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(3600);

/// How one serving term ended.
enum Term {
    /// SHUTDOWN or `stop`: the orchestrator is done.
    Ended(Stopped),
    /// The lease was lost: stand by again.
    SteppedDown,
}

/// The lease while this orchestrator serves.
struct Leadership {
    lease: Arc<dyn Lease>,
    ttl: Duration,
    /// When the orchestrator must have stopped answering unless a renewal succeeds.
    valid_until: Instant,
    /// When to renew next.
    renew_at: Instant,
}

/// A renewal on its way: when it was sent, and its outcome.
type Renewal = Pin<Box<dyn Future<Output = (Instant, Result<bool, BusError>)> + Send>>;

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
            lease: None,
            holder: format!("{}-{:016x}", std::process::id(), random_seed()),
        }
    }

    /// Serves only while holding `lease`, kept for `ttl` (at least
    /// [`MIN_LEASE_TTL`], at most [`MAX_LEASE_TTL`]) and renewed every `ttl / 3`; stands by while another
    /// orchestrator holds it. See [Standby](Orchestrator#standby) for what is
    /// guaranteed. Every acquisition loads the state from the store first, so
    /// a standby starts from what the last holder saved.
    pub fn with_lease(mut self, lease: Arc<dyn Lease>, ttl: Duration) -> Self {
        self.lease = Some((lease, ttl.clamp(MIN_LEASE_TTL, MAX_LEASE_TTL)));
        self
    }

    /// The name this orchestrator holds its lease under (its process id and a
    /// random part).
    pub fn holder(&self) -> &str {
        &self.holder
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
    /// Intervals over an hour are cut to an hour.
    pub fn with_save_interval(mut self, interval: Duration) -> Self {
        self.save_interval = interval.min(Duration::from_secs(3600));
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
    /// published, the state is saved and the lease (if any) released before
    /// this returns. With a lease, it stands by until it holds it, and after
    /// losing it stands by again rather than returning.
    pub async fn run_until(
        mut self,
        stop: impl Future<Output = ()>,
    ) -> Result<Stopped, OrchestratorError> {
        tokio::pin!(stop);
        let lease = self.lease.clone();
        let mut stepped_down = false;
        let result = loop {
            let leadership = match &lease {
                None => None,
                Some((lease, ttl)) => {
                    if stepped_down {
                        self.reset_engine();
                    }
                    let Some(sent) = self
                        .stand_by(lease.as_ref(), *ttl, stepped_down, stop.as_mut())
                        .await
                    else {
                        break Ok(Stopped::Stopped);
                    };
                    Some(Leadership {
                        lease: lease.clone(),
                        ttl: *ttl,
                        valid_until: sent + *ttl / 2,
                        renew_at: sent + *ttl / 3,
                    })
                }
            };
            let leading = leadership.is_some();
            match self.serve(stop.as_mut(), leadership).await {
                Ok(Term::Ended(stopped)) => break Ok(stopped),
                Ok(Term::SteppedDown) => stepped_down = true,
                // Another orchestrator may manage: let it, and try again later.
                Err(
                    error @ (OrchestratorError::LoadState { .. } | OrchestratorError::Subscribe(_)),
                ) if leading => {
                    tracing::error!(%error, "cannot serve; releasing the lease and standing by");
                    self.release_lease().await;
                    stepped_down = true;
                }
                Err(error) => break Err(error),
            }
        };
        self.release_lease().await;
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

    /// Tries to take the lease every `ttl / 3` until it succeeds (returns when
    /// the successful attempt was sent) or `stop` completes (returns `None`).
    /// After stepping down it waits one interval before the first attempt.
    async fn stand_by(
        &self,
        lease: &dyn Lease,
        ttl: Duration,
        wait_first: bool,
        mut stop: Pin<&mut impl Future<Output = ()>>,
    ) -> Option<Instant> {
        let every = ttl / 3;
        let mut attempts = tokio::time::interval_at(
            if wait_first {
                Instant::now() + every
            } else {
                Instant::now()
            },
            every,
        );
        attempts.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut told_held = false;
        let mut told_failing = false;
        loop {
            tokio::select! {
                () = stop.as_mut() => {
                    tracing::info!("stop requested while standing by");
                    return None;
                }
                _ = attempts.tick() => {}
            }
            let sent = Instant::now();
            let attempt = tokio::select! {
                () = stop.as_mut() => {
                    tracing::info!("stop requested while standing by");
                    return None;
                }
                attempt = tokio::time::timeout(every, lease.try_acquire(&self.holder, ttl)) => {
                    attempt.unwrap_or(Err(BusError::Timeout(every)))
                }
            };
            match attempt {
                Ok(true) => {
                    tracing::info!(lease = %lease.describe(), holder = %self.holder, "took the lease; serving");
                    return Some(sent);
                }
                Ok(false) => {
                    told_failing = false;
                    if !told_held {
                        tracing::info!(
                            "standing by: {} is held by another orchestrator",
                            lease.describe()
                        );
                        told_held = true;
                    }
                }
                Err(error) => {
                    if told_failing {
                        tracing::debug!(lease = %lease.describe(), %error, "could not try the lease");
                    } else {
                        tracing::warn!(lease = %lease.describe(), %error, "could not try the lease; standing by");
                        told_failing = true;
                    }
                }
            }
        }
    }

    /// Releases the lease if this orchestrator holds it (bounded by its time to live).
    async fn release_lease(&self) {
        let Some((lease, ttl)) = &self.lease else {
            return;
        };
        match tokio::time::timeout(*ttl, lease.release(&self.holder)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(lease = %lease.describe(), %error, "could not release the lease; it expires by itself");
            }
            Err(_) => {
                tracing::warn!(lease = %lease.describe(), "releasing the lease timed out; it expires by itself");
            }
        }
    }

    /// A fresh engine with the same pool: after stepping down, requests held
    /// and replies not yet sent belong to the term that ended.
    fn reset_engine(&mut self) {
        let snapshot = self.engine.pool().snapshot();
        let mut engine = Engine::new(self.engine.config().clone(), SplitMix64::new(random_seed()));
        engine.restore(&snapshot);
        self.engine = engine;
    }

    /// One serving term: loads the state, subscribes, and serves until
    /// SHUTDOWN, `stop`, or (with a lease) the lease is lost.
    async fn serve(
        &mut self,
        mut stop: Pin<&mut impl Future<Output = ()>>,
        mut leadership: Option<Leadership>,
    ) -> Result<Term, OrchestratorError> {
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
        let mut sub = match self
            .bus
            .subscribe(&[channels.announce.clone(), channels.request.clone()])
            .await
        {
            Ok(sub) => sub,
            Err(error) => {
                if let Some(saver) = saver {
                    saver.abort();
                }
                return Err(OrchestratorError::Subscribe(error));
            }
        };
        tracing::info!(announce = %channels.announce, request = %channels.request, "orchestrator ready");

        let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Transmit>(OUTBOX);
        let publisher = tokio::spawn(publish_loop(self.bus.clone(), out_rx));
        let mut renewal: Option<Renewal> = None;

        let result = loop {
            if let Some(lead) = &leadership
                && Instant::now() >= lead.valid_until
            {
                tracing::error!(
                    lease = %lead.lease.describe(),
                    "could not renew the lease in time; stepping down and standing by"
                );
                break Ok(Term::SteppedDown);
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
            let renewing = renewal.is_some();
            let (renew_at, valid_until) = match &leadership {
                Some(lead) => (Some(lead.renew_at), Some(lead.valid_until)),
                None => (None, None),
            };
            tokio::select! {
                ev = sub.next() => match ev {
                    Some(BusEvent::Message(_))
                        if leadership
                            .as_ref()
                            .is_some_and(|lead| Instant::now() >= lead.valid_until) =>
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
                () = sleep_until_some(renew_at), if !renewing => {
                    if let Some(lead) = &leadership {
                        renewal = Some(renew(lead.lease.clone(), self.holder.clone(), lead.ttl));
                    }
                }
                (sent, renewed) = async {
                    match renewal.as_mut() {
                        Some(renewal) => renewal.await,
                        None => std::future::pending().await,
                    }
                }, if renewing => {
                    renewal = None;
                    if let Some(lead) = leadership.as_mut() {
                        match renewed {
                            Ok(true) => {
                                lead.valid_until = lead.valid_until.max(sent + lead.ttl / 2);
                                lead.renew_at = sent + lead.ttl / 3;
                            }
                            Ok(false) => {
                                tracing::error!(
                                    lease = %lead.lease.describe(),
                                    "another orchestrator holds the lease; stepping down and standing by"
                                );
                                break Ok(Term::SteppedDown);
                            }
                            Err(error) => {
                                tracing::warn!(lease = %lead.lease.describe(), %error, "could not renew the lease; trying again");
                                lead.renew_at = Instant::now() + (lead.ttl / 12).max(Duration::from_millis(5));
                            }
                        }
                    }
                }
                () = sleep_until_some(valid_until) => {
                    // Checked at the top of the loop.
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
                break Ok(Term::Ended(Stopped::Shutdown));
            }
        };
        // Stop answering first: requests not yet read are left to the next holder.
        drop(sub);
        drop(out_tx);
        // Replies already produced answer requests of this term: send them.
        let _ = publisher.await;
        if let Some(saver) = saver {
            if matches!(result, Ok(Term::SteppedDown)) {
                // Someone else may hold the lease now and save: save nothing more.
                saver.abort();
            } else {
                if self.engine.stats().changes != saved_changes {
                    let _ = save_tx.send(self.snapshot_bytes()).await;
                }
                drop(save_tx);
                let _ = saver.await;
            }
        }
        result
    }
}

/// Sleeps until `at`, or forever if it is `None`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A renewal of `lease` for `holder`, bounded by `ttl / 3`, with the time it was sent.
fn renew(lease: Arc<dyn Lease>, holder: String, ttl: Duration) -> Renewal {
    Box::pin(async move {
        let sent = Instant::now();
        let limit = ttl / 3;
        let renewed = tokio::time::timeout(limit, lease.try_acquire(&holder, ttl))
            .await
            .unwrap_or(Err(BusError::Timeout(limit)));
        (sent, renewed)
    })
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
            KeyEvent::Expired { refresh_at: until } => {
                tracing::debug!(%platform, %key, until = %Timestamp::as_secs(*until), "key rate limited")
            }
            KeyEvent::Invalidated => tracing::warn!(%platform, %key, "key invalidated"),
        },
        Event::Shutdown => tracing::info!("SHUTDOWN received"),
    }
}
