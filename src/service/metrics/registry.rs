//! [`Metrics`]: what is counted, and the Prometheus text it is shown as.

use super::tracking::Tracking;
use crate::engine::{Engine, Event};
use crate::protocol::DecodeError;
use crate::rng::SplitMix64;
use crate::time::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The most platform names used as label values; further platforms are
/// counted under `(other)`, so that a client publishing to ever new platforms
/// cannot grow the metrics without bound.
pub const MAX_PLATFORM_LABELS: usize = 256;

/// The label value of a platform that is not in the pool (a NEW for a
/// platform nobody published to).
pub(super) const UNKNOWN_PLATFORM: &str = "(unknown)";
/// The label value of platforms beyond [`MAX_PLATFORM_LABELS`].
const OTHER_PLATFORM: &str = "(other)";

/// How often the key counts are taken from the engine at most.
pub(super) const OBSERVE_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    platform: String,
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnswerLabels {
    platform: String,
    answer: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    platform: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlatformLabels {
    platform: String,
}

/// The metrics of one orchestrator, shared by its clones: counters of the
/// messages handled and answered, gauges of the pool and of the
/// orchestrator's role, and the time from a request to its reply. Give it to
/// [`Orchestrator::with_metrics`](crate::service::Orchestrator::with_metrics),
/// and show it with [`serve_http`](super::serve_http) or
/// [`encode`](Self::encode).
///
/// | metric | type | labels | what |
/// | --- | --- | --- | --- |
/// | `keyman_messages_total` | counter | `platform`, `type` | NEW, EXPIRE, INVALIDATE, PUBLISH, UNPUBLISH handled |
/// | `keyman_admin_messages_total` | counter | `type` | ACK, LIST_PLATFORMS, LIST_KEYS, LIST_INVALID_KEYS, STATUS, SHUTDOWN handled |
/// | `keyman_new_answered_total` | counter | `platform`, `answer` | NEW answered: `key`, `wait`, or the error code (`unknown_platform`, `no_keys`, …) |
/// | `keyman_rejected_messages_total` | counter | `reason` | messages dropped: `too_large`, `not_json`, `missing_type`, `unknown_type`, `unknown_channel`, … |
/// | `keyman_keys` | gauge | `platform`, `state` | keys `fresh`, `expired`, `invalid` |
/// | `keyman_remaining_calls` | gauge | `platform` | the known remaining calls less those lent (absent while none is known) |
/// | `keyman_leased_calls` | gauge | `platform` | calls lent in quota leases outstanding |
/// | `keyman_held_requests` | gauge | | NEW requests held for a key now |
/// | `keyman_leader` | gauge | | 1 while serving (holding the lease, if any), 0 standing by |
/// | `keyman_ready` | gauge | | 1 while serving, subscribed and connected (what `/readyz` says) |
/// | `keyman_broker_connected` | gauge | | 1 while the broker connection is up |
/// | `keyman_seconds_since_last_save` | gauge | | since the state last landed in (or was loaded from) its store; absent without a store |
/// | `keyman_reply_seconds` | histogram | | from a NEW's arrival to its reply being published |
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    messages: Family<MessageLabels, Counter>,
    admin: Family<TypeLabels, Counter>,
    answered: Family<AnswerLabels, Counter>,
    rejected: Family<ReasonLabels, Counter>,
    keys: Family<KeyLabels, Gauge>,
    remaining: Family<PlatformLabels, Gauge>,
    leased: Family<PlatformLabels, Gauge>,
    held: Gauge,
    leader: Gauge,
    ready: Gauge,
    connected: Gauge,
    save_age: Gauge<f64, AtomicU64>,
    reply_seconds: Histogram,
    /// Whether the orchestrator serves, and is subscribed.
    serving: AtomicBool,
    subscribed: AtomicBool,
    broker_up: AtomicBool,
    /// When the state last landed in its store (or was loaded), if it has a store.
    last_save: Mutex<Option<Instant>>,
    /// The platforms used as label values.
    platforms: Mutex<HashSet<String>>,
    /// When the key counts were last taken.
    observed: Mutex<Option<Instant>>,
    /// Which reply answers which request.
    tracking: Mutex<Tracking>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Locks `m`, whatever a panic elsewhere left in it (counters stay usable).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    /// Metrics with every counter at zero, standing by.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("keyman");
        let messages = Family::<MessageLabels, Counter>::default();
        registry.register(
            "messages",
            "Messages handled, by type (NEW, EXPIRE, INVALIDATE, PUBLISH, UNPUBLISH) and platform",
            messages.clone(),
        );
        let admin = Family::<TypeLabels, Counter>::default();
        registry.register(
            "admin_messages",
            "Admin messages handled (ACK, LIST_PLATFORMS, LIST_KEYS, LIST_INVALID_KEYS, STATUS, SHUTDOWN)",
            admin.clone(),
        );
        let answered = Family::<AnswerLabels, Counter>::default();
        registry.register(
            "new_answered",
            "NEW requests answered, by platform and answer (key, wait, or the error code)",
            answered.clone(),
        );
        let rejected = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "rejected_messages",
            "Messages dropped as malformed, oversized, of an unknown type or on an unknown channel",
            rejected.clone(),
        );
        let keys = Family::<KeyLabels, Gauge>::default();
        registry.register(
            "keys",
            "Keys by platform and state (fresh, expired, invalid)",
            keys.clone(),
        );
        let remaining = Family::<PlatformLabels, Gauge>::default();
        registry.register(
            "remaining_calls",
            "The known remaining calls of the platform's accounts, less the calls lent (absent while none is known)",
            remaining.clone(),
        );
        let leased = Family::<PlatformLabels, Gauge>::default();
        registry.register(
            "leased_calls",
            "Calls lent in quota leases outstanding",
            leased.clone(),
        );
        let held = Gauge::default();
        registry.register(
            "held_requests",
            "NEW requests held waiting for a key",
            held.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this orchestrator serves (holds the lease, if any), 0 while it stands by",
            leader.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 while serving, subscribed and connected to the broker (what /readyz says)",
            ready.clone(),
        );
        let connected = Gauge::default();
        registry.register(
            "broker_connected",
            "1 while the connection to the broker is up",
            connected.clone(),
        );
        let save_age = Gauge::<f64, AtomicU64>::default();
        let reply_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "reply_seconds",
            "Time from a NEW's arrival to its reply being published",
            reply_seconds.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                messages,
                admin,
                answered,
                rejected,
                keys,
                remaining,
                leased,
                held,
                leader,
                ready,
                connected,
                save_age,
                reply_seconds,
                serving: AtomicBool::new(false),
                subscribed: AtomicBool::new(false),
                broker_up: AtomicBool::new(false),
                last_save: Mutex::new(None),
                platforms: Mutex::new(HashSet::new()),
                observed: Mutex::new(None),
                tracking: Mutex::new(Tracking::default()),
            }),
        }
    }

    /// The metrics in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> String {
        let inner = &self.inner;
        let mut text = String::new();
        // Formatting into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &inner.registry);
        if let Some(at) = *lock(&inner.last_save) {
            inner.save_age.set(at.elapsed().as_secs_f64());
            let mut extra = Registry::with_prefix("keyman");
            extra.register(
                "seconds_since_last_save",
                "Seconds since the state last landed in its store (or was loaded from it)",
                inner.save_age.clone(),
            );
            let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &extra);
        }
        text
    }

    /// Whether the orchestrator serves: it is the leader (holds the lease, if
    /// it has one), is subscribed to its channels and the broker connection is
    /// up. `/readyz` answers 200 exactly then.
    pub fn is_ready(&self) -> bool {
        let inner = &self.inner;
        inner.serving.load(Ordering::Acquire)
            && inner.subscribed.load(Ordering::Acquire)
            && inner.broker_up.load(Ordering::Acquire)
    }

    fn update_ready(&self) {
        self.inner.ready.set(i64::from(self.is_ready()));
    }

    /// A term begins: loaded, subscribed, serving.
    pub(crate) fn serving(&self) {
        let inner = &self.inner;
        inner.serving.store(true, Ordering::Release);
        inner.subscribed.store(true, Ordering::Release);
        inner.leader.set(1);
        self.broker(true);
    }

    /// The term ended (stepped down, stopped): standing by or gone.
    pub(crate) fn term_ended(&self) {
        let inner = &self.inner;
        inner.serving.store(false, Ordering::Release);
        inner.subscribed.store(false, Ordering::Release);
        inner.leader.set(0);
        lock(&inner.tracking).clear();
        self.update_ready();
    }

    /// The broker connection went down or came back.
    pub(crate) fn broker(&self, up: bool) {
        self.inner.broker_up.store(up, Ordering::Release);
        self.inner.connected.set(i64::from(up));
        self.update_ready();
    }

    /// Which reply answers which request.
    pub(super) fn tracking(&self) -> MutexGuard<'_, Tracking> {
        lock(&self.inner.tracking)
    }

    /// The state landed in its store, or was loaded from it.
    pub(super) fn saved(&self) {
        *lock(&self.inner.last_save) = Some(Instant::now());
    }

    /// The label value for `platform`: its name if it is in `engine`'s pool
    /// and among the first [`MAX_PLATFORM_LABELS`], else `(other)`, or
    /// `(unknown)` if it is not in the pool.
    pub(super) fn platform_label(&self, engine: &Engine<SplitMix64>, platform: &str) -> String {
        if !engine.pool().has_platform(platform) {
            return UNKNOWN_PLATFORM.to_string();
        }
        let mut platforms = lock(&self.inner.platforms);
        if platforms.contains(platform) {
            return platform.to_string();
        }
        if platforms.len() < MAX_PLATFORM_LABELS {
            platforms.insert(platform.to_string());
            return platform.to_string();
        }
        OTHER_PLATFORM.to_string()
    }

    /// Counts a message of `kind` handled for `platform` (already a label value).
    pub(super) fn count_message(&self, platform: String, kind: &'static str) {
        self.inner
            .messages
            .get_or_create(&MessageLabels {
                platform,
                r#type: kind,
            })
            .inc();
    }

    /// Counts an admin message of `kind`.
    pub(super) fn count_admin(&self, kind: &'static str) {
        self.inner
            .admin
            .get_or_create(&TypeLabels { r#type: kind })
            .inc();
    }

    /// Counts a NEW of `platform` (a label value) answered with `answer`.
    pub(super) fn count_answer(&self, platform: String, answer: &'static str) {
        self.inner
            .answered
            .get_or_create(&AnswerLabels { platform, answer })
            .inc();
    }

    /// A reply to a NEW that arrived at `arrived` was published.
    pub(super) fn reply_published(&self, arrived: Instant) {
        self.inner
            .reply_seconds
            .observe(arrived.elapsed().as_secs_f64());
    }

    /// Counts what an engine event says (rejected messages).
    pub(crate) fn event(&self, event: &Event) {
        let reason = match event {
            Event::Rejected { error, .. } => rejection(error),
            Event::UnknownChannel { .. } => "unknown_channel",
            _ => return,
        };
        self.inner
            .rejected
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// When the key counts are next due ([`observe`](Self::observe)).
    pub(crate) fn observe_at(&self) -> Instant {
        match *lock(&self.inner.observed) {
            Some(at) => at + OBSERVE_EVERY,
            None => Instant::now(),
        }
    }

    /// Takes the key counts and held requests from `engine` at `now`, at
    /// most once every second.
    pub(crate) fn observe(&self, engine: &mut Engine<SplitMix64>, now: Timestamp) {
        {
            let mut observed = lock(&self.inner.observed);
            if observed.is_some_and(|at| at.elapsed() < OBSERVE_EVERY) {
                return;
            }
            *observed = Some(Instant::now());
        }
        self.inner
            .held
            .set(i64::try_from(engine.held()).unwrap_or(i64::MAX));
        for status in engine.status(now) {
            let platform = self.platform_label(engine, &status.platform);
            if platform == OTHER_PLATFORM {
                // Counts of several platforms under one label would overwrite each other.
                continue;
            }
            for (state, n) in [
                ("fresh", status.fresh),
                ("expired", status.expired),
                ("invalid", status.invalid),
            ] {
                self.inner
                    .keys
                    .get_or_create(&KeyLabels {
                        platform: platform.clone(),
                        state,
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            let labels = PlatformLabels { platform };
            match status.remaining {
                Some(n) => {
                    self.inner
                        .remaining
                        .get_or_create(&labels)
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                None => {
                    self.inner.remaining.remove(&labels);
                }
            }
            let leased = status.leased.unwrap_or(0);
            self.inner
                .leased
                .get_or_create(&labels)
                .set(i64::try_from(leased).unwrap_or(i64::MAX));
        }
    }
}

/// The `reason` label of a rejected message.
fn rejection(error: &DecodeError) -> &'static str {
    match error {
        DecodeError::TooLarge { .. } => "too_large",
        DecodeError::Json(_) => "not_json",
        DecodeError::NotAnObject(_) => "not_an_object",
        DecodeError::MissingType => "missing_type",
        DecodeError::UnknownType(_) => "unknown_type",
        DecodeError::MissingField(_) => "missing_field",
        DecodeError::WrongType { .. } => "wrong_type",
        DecodeError::Invalid { .. } => "invalid_field",
        DecodeError::UnexpectedReply(_) => "unexpected_reply",
        DecodeError::TooLong { .. } => "too_long",
        DecodeError::LimitReached { .. } => "limit_reached",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;

    #[test]
    fn platform_labels_are_platforms_of_the_pool_and_bounded() {
        let metrics = Metrics::new();
        let mut engine = Engine::new(EngineConfig::default(), SplitMix64::new(1));
        let now = Timestamp::from_secs(1);
        assert_eq!(metrics.platform_label(&engine, "nowhere"), UNKNOWN_PLATFORM);
        for i in 0..MAX_PLATFORM_LABELS + 3 {
            engine.publish(now, &format!("p{i}"), &format!("ghp_key_{i}_0123456789"));
        }
        assert_eq!(metrics.platform_label(&engine, "p0"), "p0");
        for i in 1..MAX_PLATFORM_LABELS {
            assert_eq!(
                metrics.platform_label(&engine, &format!("p{i}")),
                format!("p{i}")
            );
        }
        let last = format!("p{}", MAX_PLATFORM_LABELS + 2);
        assert_eq!(metrics.platform_label(&engine, &last), OTHER_PLATFORM);
        metrics.observe(&mut engine, now);
        let text = metrics.encode();
        assert!(
            text.contains(r#"keyman_keys{platform="p0",state="fresh"} 1"#),
            "{text}"
        );
        assert!(!text.contains(&last) && !text.contains("ghp_key"), "{text}");
        // Remaining calls once a report says them; calls lent in leases.
        assert!(!text.contains("keyman_remaining_calls{"), "{text}");
        assert!(
            text.contains(r#"keyman_leased_calls{platform="p0"} 0"#),
            "{text}"
        );
        let seen = crate::quota::Observation {
            remaining: Some(4_000),
            reset: Some(Timestamp::from_secs(3_600)),
            ..Default::default()
        };
        engine.report(now, "p1", "ghp_key_1_0123456789", &seen, None);
        engine.lease(now, "p1", 250);
        *lock(&metrics.inner.observed) = None;
        metrics.observe(&mut engine, now);
        let text = metrics.encode();
        assert!(
            text.contains(r#"keyman_remaining_calls{platform="p1"} 3750"#),
            "{text}"
        );
        assert!(
            text.contains(r#"keyman_leased_calls{platform="p1"} 250"#),
            "{text}"
        );
    }
}
