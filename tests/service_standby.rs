//! Standby takeover over the in-memory bus: two orchestrators share a lease
//! and a state store; only the holder answers, and the other takes over with
//! the saved state when the first stops or loses the lease.
//!
//! Everything here waits only for time (the lease's, the save interval, the
//! clients' deadlines), so the tests run on tokio's paused clock: time jumps
//! to the next timer whenever every task is idle.

#![cfg(feature = "tokio")]

use async_trait::async_trait;
use keyman::EngineConfig;
use keyman::service::{
    Bus, BusError, BusEvent, ClientConfig, KeyAdmin, KeyClient, KeyPublisher, KeySource, Lease,
    MemoryLease, MemoryStore, Orchestrator, Records, Saved, StateStore, StateWrite, Stopped,
    Subscription,
};
use keyman_transport::MemoryBus;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

const TTL: Duration = Duration::from_millis(300);
const WAIT: Duration = Duration::from_secs(10);
const REQ: &str = "worker-oath-request";

/// A lease that can be cut off from its broker: while broken, every call fails.
struct BreakableLease {
    inner: MemoryLease,
    broken: Arc<AtomicBool>,
}

#[async_trait]
impl Lease for BreakableLease {
    async fn try_acquire(&self, holder: &str, ttl: Duration) -> Result<bool, BusError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(BusError::Disconnected("cut off for the test".into()));
        }
        self.inner.try_acquire(holder, ttl).await
    }

    async fn release(&self, holder: &str) -> Result<(), BusError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(BusError::Disconnected("cut off for the test".into()));
        }
        self.inner.release(holder).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// A store whose loads take `delay`: a large state on a slow broker.
struct SlowStore {
    inner: MemoryStore,
    delay: Duration,
}

#[async_trait]
impl StateStore for SlowStore {
    async fn load(&self, fence: Option<&str>) -> Result<Option<Records>, BusError> {
        tokio::time::sleep(self.delay).await;
        self.inner.load(fence).await
    }

    async fn save(&self, write: &StateWrite, fence: Option<&str>) -> Result<Saved, BusError> {
        self.inner.save(write, fence).await
    }

    async fn set_aside(&self, stamp_ms: u64) -> Result<Option<String>, BusError> {
        self.inner.set_aside(stamp_ms).await
    }

    fn describe(&self) -> String {
        format!("{} (slow)", self.inner.describe())
    }
}

fn config() -> ClientConfig {
    ClientConfig {
        deadline: Duration::from_secs(2),
        resend_interval: Duration::from_millis(100),
        ..ClientConfig::default()
    }
}

/// An admin client on `bus`.
async fn admin(bus: &MemoryBus) -> KeyPublisher {
    KeyPublisher::connect(Arc::new(bus.clone()), config())
        .await
        .expect("admin")
}

/// An orchestrator running in a task, stopped by `stop`.
struct Running {
    holder: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<Stopped, keyman::service::OrchestratorError>>,
}

impl Running {
    fn start(bus: &MemoryBus, store: &MemoryStore, lease: Arc<dyn Lease>) -> Running {
        Running::start_with_store(bus, Arc::new(store.clone()), lease)
    }

    fn start_with_store(
        bus: &MemoryBus,
        store: Arc<dyn StateStore>,
        lease: Arc<dyn Lease>,
    ) -> Running {
        let orchestrator = Orchestrator::new(Arc::new(bus.clone()), EngineConfig::default())
            .with_store(store)
            .with_save_interval(Duration::from_millis(20))
            .with_lease(lease, TTL);
        let holder = orchestrator.holder().to_owned();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(orchestrator.run_until(async {
            let _ = stopped.await;
        }));
        Running {
            holder,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) -> Stopped {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the orchestrator stops")
            .expect("task")
            .expect("a clean stop")
    }
}

/// Waits until `lease` is held by `holder`.
async fn until_held_by(lease: &MemoryLease, holder: &str) {
    let until = Instant::now() + WAIT;
    while lease.holder().as_deref() != Some(holder) {
        assert!(Instant::now() < until, "{holder} never took the lease");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends raw NEW requests (each with its own request id) and counts the
/// replies per request id, as Augur's workers would see them.
struct Prober {
    bus: MemoryBus,
    replies: Subscription,
    next_id: AtomicU64,
    counts: HashMap<u64, usize>,
}

impl Prober {
    async fn new(bus: &MemoryBus) -> Prober {
        let replies = bus
            .subscribe(&[format!("{REQ}-4242")])
            .await
            .expect("subscribe replies");
        Prober {
            bus: bus.clone(),
            replies,
            next_id: AtomicU64::new(1),
            counts: HashMap::new(),
        }
    }

    async fn send_new(&self) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let payload = format!(
            r#"{{"type": "NEW", "key_platform": "p", "requester_id": 4242, "request_id": {id}}}"#
        );
        self.bus
            .publish(REQ, payload.as_bytes())
            .await
            .expect("publish NEW");
        id
    }

    /// Reads the replies that arrive within `window`.
    async fn collect(&mut self, window: Duration) {
        let until = Instant::now() + window;
        while let Ok(Some(event)) = tokio::time::timeout_at(until, self.replies.next()).await {
            if let BusEvent::Message(m) = event {
                let reply: serde_json::Value =
                    serde_json::from_slice(&m.payload).expect("a JSON reply");
                assert!(reply["key"].is_string(), "a key: {reply}");
                let id = reply["request_id"].as_u64().expect("the request id echoed");
                *self.counts.entry(id).or_default() += 1;
            }
        }
    }

    fn answered_twice(&self) -> Vec<u64> {
        self.counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| *id)
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn only_the_holder_answers_and_a_standby_takes_over_with_the_saved_state() {
    let bus = MemoryBus::new();
    let store = MemoryStore::new();
    let lease = MemoryLease::new("leader");
    let first = Running::start(&bus, &store, Arc::new(lease.clone()));
    until_held_by(&lease, &first.holder).await;
    let second = Running::start(&bus, &store, Arc::new(lease.clone()));

    let admin = admin(&bus).await;
    admin.ping().await.expect("the first orchestrator answers");
    for key in ["key-a-0123456789", "key-b-0123456789", "key-c-0123456789"] {
        admin.publish("p", key).await.expect("publish");
    }
    let worker = KeyClient::connect(Arc::new(bus.clone()), config())
        .await
        .expect("worker");
    worker
        .invalidate("p", "key-c-0123456789")
        .await
        .expect("invalidate");

    // Only the holder answers: one reply per request.
    let mut prober = Prober::new(&bus).await;
    for _ in 0..5 {
        prober.send_new().await;
    }
    prober.collect(Duration::from_millis(300)).await;
    assert_eq!(prober.counts.len(), 5, "every request is answered");
    assert!(prober.answered_twice().is_empty(), "{:?}", prober.counts);
    assert_eq!(lease.holder().as_deref(), Some(first.holder.as_str()));

    // A clean stop saves and releases: the standby takes over at once.
    let stopped_at = Instant::now();
    assert_eq!(first.stop().await, Stopped::Stopped);
    until_held_by(&lease, &second.holder).await;
    assert!(
        stopped_at.elapsed() < TTL,
        "a released lease is taken within ttl/3, took {:?}",
        stopped_at.elapsed()
    );
    let until = Instant::now() + WAIT;
    let status = loop {
        match admin.status().await {
            Ok(status) => break status,
            Err(e) => assert!(Instant::now() < until, "the standby never answered: {e}"),
        }
    };
    assert_eq!(status.len(), 1, "{status:?}");
    assert_eq!((status[0].fresh, status[0].invalid), (2, 1), "{status:?}");
    assert_eq!(
        admin.invalid_keys("p").await.expect("invalid"),
        vec!["key-c-0123456789".to_string()]
    );
    let key = worker.request("p").await.expect("a key from the standby");
    assert_ne!(key, "key-c-0123456789");
    assert_eq!(second.stop().await, Stopped::Stopped);
    assert_eq!(lease.holder(), None, "released on the way out");
}

#[tokio::test(start_paused = true)]
async fn a_holder_that_cannot_renew_steps_down_before_the_standby_takes_over() {
    let bus = MemoryBus::new();
    let store = MemoryStore::new();
    let lease = MemoryLease::new("leader");
    let broken = Arc::new(AtomicBool::new(false));
    let first = Running::start(
        &bus,
        &store,
        Arc::new(BreakableLease {
            inner: lease.clone(),
            broken: broken.clone(),
        }),
    );
    until_held_by(&lease, &first.holder).await;
    let second = Running::start(&bus, &store, Arc::new(lease.clone()));
    let admin = admin(&bus).await;
    admin.ping().await.expect("ping");
    admin
        .publish("p", "key-a-0123456789")
        .await
        .expect("publish");
    admin
        .publish("p", "key-b-0123456789")
        .await
        .expect("publish");
    admin.ping().await.expect("ping");

    // Requests keep coming while the first holder is cut off from the lease;
    // none may be answered twice.
    let mut prober = Prober::new(&bus).await;
    broken.store(true, Ordering::SeqCst);
    let cut = Instant::now();
    while lease.holder().as_deref() != Some(second.holder.as_str()) {
        assert!(cut.elapsed() < WAIT, "the standby never took over");
        prober.send_new().await;
        prober.collect(Duration::from_millis(10)).await;
    }
    let took_over = cut.elapsed();
    assert!(
        took_over >= TTL / 2,
        "taken over after {took_over:?}, before the lease could expire"
    );
    // The new holder answers; every request is answered at most once.
    let until = Instant::now() + WAIT;
    loop {
        let id = prober.send_new().await;
        prober.collect(Duration::from_millis(50)).await;
        if prober.counts.contains_key(&id) {
            break;
        }
        assert!(Instant::now() < until, "the new holder never answered");
    }
    prober.collect(Duration::from_millis(100)).await;
    assert!(
        prober.answered_twice().is_empty(),
        "answered twice: {:?}",
        prober.answered_twice()
    );

    // The first one stands by rather than exiting, and takes over again when
    // the second stops.
    broken.store(false, Ordering::SeqCst);
    assert!(!first.task.is_finished(), "the old holder exited");
    admin
        .publish("p", "key-c-0123456789")
        .await
        .expect("publish to the second");
    admin.ping().await.expect("ping");
    assert_eq!(second.stop().await, Stopped::Stopped);
    until_held_by(&lease, &first.holder).await;
    let until = Instant::now() + WAIT;
    let keys = loop {
        match admin.keys("p").await {
            Ok(keys) => break keys,
            Err(e) => assert!(Instant::now() < until, "the first never answered: {e}"),
        }
    };
    assert_eq!(keys.len(), 3, "the state the second saved: {keys:?}");
    assert_eq!(first.stop().await, Stopped::Stopped);
}

#[tokio::test(start_paused = true)]
async fn a_standby_stops_when_told_without_ever_serving() {
    let bus = MemoryBus::new();
    let store = MemoryStore::new();
    let lease = MemoryLease::new("leader");
    assert!(lease.try_acquire("someone-else", WAIT).await.expect("take"));
    let standby = Running::start(&bus, &store, Arc::new(lease.clone()));
    let admin = KeyPublisher::connect(
        Arc::new(bus.clone()),
        ClientConfig {
            deadline: Duration::from_millis(200),
            ..config()
        },
    )
    .await
    .expect("admin");
    assert!(admin.ping().await.is_err(), "a standby does not answer");
    assert_eq!(standby.stop().await, Stopped::Stopped);
    assert_eq!(lease.holder().as_deref(), Some("someone-else"));
    assert_eq!(
        keyman::service::StateStore::load(&store, None)
            .await
            .expect("load"),
        None,
        "a standby saves nothing"
    );
}

/// Takeover over the in-memory bus: the serving orchestrator dies
/// (its task is aborted: no release, no last words) with requests of Augur's
/// workers in flight, one PUBLISH each and no retry. The standby, which
/// watched the request channels and their replies, answers each of them
/// exactly once, applies the state changes sent meanwhile, and does not
/// answer again a request the dead one had answered.
#[tokio::test(start_paused = true)]
async fn a_takeover_answers_what_the_dead_holder_left_unanswered_once() {
    let bus = MemoryBus::new();
    let store = MemoryStore::new();
    let lease = MemoryLease::new("leader");
    let first = Running::start(&bus, &store, Arc::new(lease.clone()));
    until_held_by(&lease, &first.holder).await;
    let second = Running::start(&bus, &store, Arc::new(lease.clone()));
    let publish =
        |key: &str| format!(r#"{{"type": "PUBLISH", "key_str": "{key}", "key_platform": "p"}}"#);
    let new = |id: u32| format!(r#"{{"type": "NEW", "key_platform": "p", "requester_id": {id}}}"#);
    let ann = "augur-oauth-announce";
    let admin = admin(&bus).await;
    admin.ping().await.expect("the first orchestrator answers");
    for key in ["key-a-0123456789", "key-b-0123456789"] {
        bus.publish(ann, publish(key).as_bytes()).await.unwrap();
    }
    admin.ping().await.expect("the first orchestrator answers");
    // Let the standby's watch open and the state be saved.
    tokio::time::sleep(TTL).await;

    // Augur's workers, one reply channel each.
    let ids: Vec<u32> = (1000..1016).collect();
    let channels: Vec<String> = ids.iter().map(|id| format!("{REQ}-{id}")).collect();
    let mut replies = bus.subscribe(&channels).await.expect("subscribe replies");
    // Answered by the first before it dies: must not be answered again.
    for id in &ids[..8] {
        bus.publish(REQ, new(*id).as_bytes()).await.unwrap();
    }
    let mut answers: HashMap<String, Vec<String>> = HashMap::new();
    while answers.values().map(Vec::len).sum::<usize>() < 8 {
        match tokio::time::timeout(WAIT, replies.next()).await {
            Ok(Some(BusEvent::Message(m))) => answers
                .entry(m.channel)
                .or_default()
                .push(String::from_utf8_lossy(&m.payload).into_owned()),
            other => panic!("the first orchestrator does not answer: {other:?}"),
        }
    }

    first.task.abort();
    // Sent while nobody serves: requests, a new key and an invalidation.
    for id in &ids[8..] {
        bus.publish(REQ, new(*id).as_bytes()).await.unwrap();
    }
    bus.publish(ann, publish("key-c-0123456789").as_bytes())
        .await
        .unwrap();
    bus.publish(
        REQ,
        br#"{"type": "INVALIDATE", "key_str": "key-a-0123456789", "key_platform": "p", "requester_id": 1}"#,
    )
    .await
    .unwrap();
    let killed = Instant::now();
    until_held_by(&lease, &second.holder).await;
    println!("taken over {:?} after the holder died", killed.elapsed());
    let until = Instant::now() + Duration::from_secs(2);
    while let Ok(Some(event)) = tokio::time::timeout_at(until, replies.next()).await {
        if let BusEvent::Message(m) = event {
            answers
                .entry(m.channel)
                .or_default()
                .push(String::from_utf8_lossy(&m.payload).into_owned());
        }
    }
    for channel in &channels {
        let got = answers.get(channel).cloned().unwrap_or_default();
        assert_eq!(got.len(), 1, "{channel}: one reply, got {got:?}");
        let reply: serde_json::Value = serde_json::from_str(&got[0]).expect("JSON");
        // The invalidation sent during the gap was applied before the requests after it.
        assert!(
            matches!(
                reply["key"].as_str(),
                Some("key-a-0123456789" | "key-b-0123456789" | "key-c-0123456789")
            ),
            "{channel}: {reply}"
        );
    }
    let mut keys = admin.keys("p").await.expect("list keys");
    keys.sort();
    assert_eq!(keys, ["key-b-0123456789", "key-c-0123456789"]);
    assert_eq!(
        admin.invalid_keys("p").await.expect("list invalid"),
        ["key-a-0123456789"]
    );
    assert_eq!(second.stop().await, Stopped::Stopped);
}

/// A state that takes three times the lease's time to live to load: the
/// lease is kept while it loads (the holder serves at all), and a standby
/// that takes over from a dead holder answers each request it left exactly
/// once, still holding the lease afterwards.
#[tokio::test(start_paused = true)]
async fn a_load_longer_than_the_lease_keeps_it_and_the_takeover_answers_each_request_once() {
    let bus = MemoryBus::new();
    let store: Arc<dyn StateStore> = Arc::new(SlowStore {
        inner: MemoryStore::new(),
        delay: TTL * 3,
    });
    let lease = MemoryLease::new("leader");
    let first = Running::start_with_store(&bus, store.clone(), Arc::new(lease.clone()));
    until_held_by(&lease, &first.holder).await;
    let admin = admin(&bus).await;
    admin
        .ping()
        .await
        .expect("the first orchestrator serves after its slow load");
    admin
        .publish("p", "key-a-0123456789")
        .await
        .expect("publish");
    let second = Running::start_with_store(&bus, store, Arc::new(lease.clone()));
    // Let the standby's watch open and the state be saved.
    tokio::time::sleep(TTL * 2).await;

    let ids: Vec<u32> = (2000..2008).collect();
    let channels: Vec<String> = ids.iter().map(|id| format!("{REQ}-{id}")).collect();
    let mut replies = bus.subscribe(&channels).await.expect("subscribe replies");
    first.task.abort();
    for id in &ids {
        let new = format!(r#"{{"type": "NEW", "key_platform": "p", "requester_id": {id}}}"#);
        bus.publish(REQ, new.as_bytes()).await.expect("publish NEW");
    }
    until_held_by(&lease, &second.holder).await;
    let mut answers: HashMap<String, usize> = HashMap::new();
    let until = Instant::now() + TTL * 10;
    while let Ok(Some(event)) = tokio::time::timeout_at(until, replies.next()).await {
        if let BusEvent::Message(m) = event {
            *answers.entry(m.channel).or_default() += 1;
        }
    }
    for channel in &channels {
        assert_eq!(answers.get(channel), Some(&1), "{channel}: {answers:?}");
    }
    assert_eq!(lease.holder().as_deref(), Some(second.holder.as_str()));
    assert_eq!(second.stop().await, Stopped::Stopped);
}
