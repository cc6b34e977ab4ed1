//! [`Orchestrator`]: runs an [`Engine`] over a [`Bus`].
//!
//! The parts, one topic a file:
//! - this file: the [`Orchestrator`], its settings, and the run loop that
//!   alternates standing by and serving;
//! - `serve`: one serving term, the loop that feeds the engine;
//! - `leadership`: the lease while serving, as a sans-IO state machine (when
//!   to renew, until when the term is valid, when to step down);
//! - `standby`: standing by (watching the request channels and their
//!   replies, trying the lease), renewing and releasing the lease, and
//!   replaying the window on takeover;
//! - `window`: the standby's window of recent messages, as a sans-IO type;
//! - `saving`: loading the state and saving it after changes;
//! - `publishing`: the outbox of replies and the task that publishes them
//!   (events are logged by `service::log`, as everywhere the service drives an engine);
//! - `error`: [`OrchestratorError`].

use super::metrics::Meter;
use super::probe::Prober;
use super::{Bus, Lease, StateStore, SystemClock, random_seed};
use crate::engine::{Engine, EngineConfig};
use crate::rng::SplitMix64;
use crate::time::Clock;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

mod error;
mod leadership;
mod publishing;
mod saving;
mod serve;
mod standby;
mod window;

pub use error::OrchestratorError;
use leadership::Leadership;
use serve::Term;
use standby::Watching;

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
///
/// While it stands by, an orchestrator on a bus that supports
/// [`Bus::subscribe_with_prefixes`] watches both request channels and their
/// reply channels in one subscription and keeps a window (`max(5 s, 3 × ttl)`,
/// at most 100 000 messages and 64 MiB) of the state changes and of the
/// requests it has not seen answered. On takeover it loads the state and
/// reads its subscription up to a marker it publishes itself (so that every
/// reply the old holder sent is in the window; it waits at most 5 s),
/// renewing the lease all the while, however long the state takes to load;
/// then it applies those changes and answers those requests in arrival order
/// before anything new, serving on from the same subscription. A request it saw
/// answered is never answered again; requests older than the window, or seen
/// before a gap in the subscription, are not answered (both are logged with a
/// count). A standby whose watch is younger than `ttl + 2 ttl / 3` leaves
/// the takeover to one that has watched longer.
pub struct Orchestrator {
    bus: Arc<dyn Bus>,
    engine: Engine<SplitMix64>,
    clock: Arc<dyn Clock>,
    store: Option<Arc<dyn StateStore>>,
    save_interval: Duration,
    lease: Option<(Arc<dyn Lease>, Duration)>,
    holder: String,
    discard_unreadable: bool,
    /// Metrics hooks (`service::metrics`); nothing unless given metrics.
    meter: Meter,
    /// Who performs the engine's probes; `None`: the engine probes nothing
    /// (or its probes all fail, if its configuration asks for them).
    prober: Option<Arc<dyn Prober>>,
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

/// How long the replies still queued when a term ends may take to publish.
const FINAL_PUBLISH_LIMIT: Duration = Duration::from_secs(1);
/// How long the final save may take; after it, what it did not save is logged as lost.
const FINAL_SAVE_LIMIT: Duration = Duration::from_secs(2);
/// How long releasing the lease on the way out may take (at most the lease's
/// time to live); a lease not released expires by itself.
const RELEASE_LIMIT: Duration = Duration::from_secs(1);

/// The shortest lease time to live [`Orchestrator::with_lease`] accepts.
pub const MIN_LEASE_TTL: Duration = Duration::from_millis(30);
/// The longest lease time to live; longer ones are cut to it.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(3600);

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
            discard_unreadable: false,
            meter: Meter::default(),
            prober: None,
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
    /// starts (and on each takeover), saved after changes (at most every save
    /// interval, and once more on the way out), so that keys and their states,
    /// the quota views, named accounts and outstanding leases survive a
    /// restart.
    pub fn with_store(mut self, store: Arc<dyn StateStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Whether saved state that cannot be read is discarded (the orchestrator
    /// then starts empty; the copy set aside is kept) rather than refused
    /// with [`OrchestratorError::UnreadableState`] (the default).
    pub fn discard_unreadable_state(mut self, discard: bool) -> Self {
        self.discard_unreadable = discard;
        self
    }

    /// How long changes may wait before they are saved (default 200 ms): what
    /// a crash can lose.
    /// Intervals over an hour are cut to an hour.
    pub fn with_save_interval(mut self, interval: Duration) -> Self {
        self.save_interval = interval.min(Duration::from_secs(3600));
        self
    }

    /// Feeds `metrics` (feature `metrics`): messages handled, replies and
    /// their latency, key counts, whether it serves, the last save. Show them
    /// with [`serve_http`](crate::service::metrics::serve_http).
    #[cfg(feature = "metrics")]
    pub fn with_metrics(mut self, metrics: crate::service::metrics::Metrics) -> Self {
        self.meter = Meter::new(metrics);
        self
    }

    /// Performs the engine's probes with `prober` (for example an
    /// [`HttpProber`](crate::service::probe::HttpProber)); the engine's
    /// [`EngineConfig::probe`](crate::EngineConfig::probe) says which keys and
    /// when. Each probe runs as its own task; the answers are fed back to the
    /// engine in the serve loop.
    pub fn with_prober(mut self, prober: Arc<dyn Prober>) -> Self {
        self.prober = Some(prober);
        self
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
    ///
    /// Whatever is unreachable, this returns within about 4 s of the stop:
    /// loading the state and subscribing give way to `stop`, publishing the
    /// last replies may take 1 s, the final save 2 s and releasing the lease
    /// 1 s. What could not be done in that time is logged (a final save that
    /// did not land at error, with the number of changes it loses); a lease
    /// not released expires by itself.
    pub async fn run_until(
        mut self,
        stop: impl Future<Output = ()>,
    ) -> Result<Stopped, OrchestratorError> {
        tokio::pin!(stop);
        // Metrics hooks: replies timed on their way out, saves noted.
        self.bus = self.meter.bus(self.bus.clone());
        self.store = self.store.take().map(|store| self.meter.store(store));
        let lease = self.lease.clone();
        let mut stepped_down = false;
        let mut watching = Watching::Try;
        let result = loop {
            let mut watch = None;
            let leadership = match &lease {
                None => None,
                Some((lease, ttl)) => {
                    if stepped_down {
                        self.reset_engine();
                    }
                    let Some(sent) = self
                        .stand_by(
                            lease.as_ref(),
                            *ttl,
                            stepped_down,
                            &mut watch,
                            &mut watching,
                            stop.as_mut(),
                        )
                        .await
                    else {
                        break Ok(Stopped::Stopped);
                    };
                    Some(Leadership::new(*ttl, sent.into_std()))
                }
            };
            let leading = leadership.is_some();
            let served = self.serve(stop.as_mut(), leadership, watch).await;
            self.meter.term_ended();
            match served {
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

    /// A fresh engine with the same pool and quotas: after stepping down,
    /// requests held and replies not yet sent belong to the term that ended.
    fn reset_engine(&mut self) {
        let snapshot = self.engine.pool().snapshot();
        let mut engine = Engine::new(self.engine.config().clone(), SplitMix64::new(random_seed()));
        engine.restore(&snapshot);
        engine.restore_quotas(self.engine.quotas().clone());
        self.engine = engine;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{BusError, MemoryLease, MemoryStore, Subscription};
    use async_trait::async_trait;
    use keyman_transport::MemoryBus;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Whether the broker has stopped answering: every call on it then waits forever.
    type Frozen = Arc<AtomicBool>;

    async fn unless_frozen(frozen: &Frozen) {
        if frozen.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }

    struct FreezingBus(MemoryBus, Frozen);

    #[async_trait]
    impl Bus for FreezingBus {
        async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), BusError> {
            unless_frozen(&self.1).await;
            self.0.publish(channel, payload).await
        }
        async fn subscribe(&self, channels: &[String]) -> Result<Subscription, BusError> {
            unless_frozen(&self.1).await;
            self.0.subscribe(channels).await
        }
    }

    struct FreezingStore(MemoryStore, Frozen);

    #[async_trait]
    impl StateStore for FreezingStore {
        async fn load(
            &self,
            fence: Option<&str>,
        ) -> Result<Option<crate::service::Records>, BusError> {
            unless_frozen(&self.1).await;
            self.0.load(fence).await
        }
        async fn save(
            &self,
            write: &crate::service::StateWrite,
            fence: Option<&str>,
        ) -> Result<crate::service::Saved, BusError> {
            unless_frozen(&self.1).await;
            self.0.save(write, fence).await
        }
        async fn set_aside(&self, stamp_ms: u64) -> Result<Option<String>, BusError> {
            unless_frozen(&self.1).await;
            self.0.set_aside(stamp_ms).await
        }
        fn describe(&self) -> String {
            "a store that can freeze".into()
        }
    }

    struct FreezingLease(MemoryLease, Frozen);

    #[async_trait]
    impl Lease for FreezingLease {
        async fn try_acquire(&self, holder: &str, ttl: Duration) -> Result<bool, BusError> {
            unless_frozen(&self.1).await;
            self.0.try_acquire(holder, ttl).await
        }
        async fn release(&self, holder: &str) -> Result<(), BusError> {
            unless_frozen(&self.1).await;
            self.0.release(holder).await
        }
        fn describe(&self) -> String {
            "a lease that can freeze".into()
        }
    }

    fn publish(key: &str) -> Vec<u8> {
        format!(r#"{{"type": "PUBLISH", "key_str": "{key}", "key_platform": "p"}}"#).into_bytes()
    }

    /// The broker, the store and the lease all stop answering (nothing fails,
    /// everything waits): a stop still returns within the bounds, and the
    /// change that could not be saved is not in the store.
    #[tokio::test(start_paused = true)]
    async fn a_stop_returns_in_bounded_time_when_nothing_answers() {
        let frozen = Frozen::default();
        let mem = MemoryBus::new();
        let store = MemoryStore::new();
        let announce = crate::protocol::DEFAULT_ANNOUNCE;
        let orchestrator = Orchestrator::new(
            Arc::new(FreezingBus(mem.clone(), frozen.clone())),
            EngineConfig::default(),
        )
        .with_store(Arc::new(FreezingStore(store.clone(), frozen.clone())))
        .with_lease(
            Arc::new(FreezingLease(MemoryLease::new("leader"), frozen.clone())),
            Duration::from_secs(3),
        );
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(orchestrator.run_until(async {
            let _ = stop_rx.await;
        }));

        // Serving, with a first key saved.
        let mut replies = mem.subscribe(&[format!("{announce}-1")]).await.unwrap();
        let ack = br#"{"type": "ACK", "requester_id": 1}"#;
        let answered = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                mem.publish(announce, ack).await.unwrap();
                if tokio::time::timeout(Duration::from_millis(100), replies.next())
                    .await
                    .is_ok()
                {
                    break;
                }
            }
        })
        .await;
        assert!(answered.is_ok(), "the orchestrator does not serve");
        mem.publish(announce, &publish("ghp_saved_0123456789"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let saved = store.load(None).await.unwrap().unwrap_or_default();
        let saved_text = |saved: &crate::service::Records| {
            saved
                .values()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect::<String>()
        };
        assert!(saved_text(&saved).contains("ghp_saved_0123456789"));

        // Everything freezes; a change and a request come in, then the stop.
        frozen.store(true, Ordering::SeqCst);
        mem.publish(announce, &publish("ghp_lost_0123456789"))
            .await
            .unwrap();
        mem.publish(announce, ack).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let asked = tokio::time::Instant::now();
        stop_tx.send(()).unwrap();
        let stopped = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("run_until returns")
            .unwrap();
        let took = asked.elapsed();
        println!("stopped {took:?} after the stop with nothing answering");
        assert_eq!(stopped, Ok(Stopped::Stopped));
        assert!(
            took <= FINAL_PUBLISH_LIMIT
                + FINAL_SAVE_LIMIT
                + RELEASE_LIMIT
                + Duration::from_millis(100),
            "took {took:?}"
        );
        let saved = store.load(None).await.unwrap().unwrap_or_default();
        assert!(!saved_text(&saved).contains("ghp_lost_0123456789"));
    }
}
