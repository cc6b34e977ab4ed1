//! `KeySource::observe`: what a worker's key source does with a response's
//! status and rate-limit headers. On the embedded pool (with an injected clock),
//! over a remote `KeyClient` talking to an orchestrator on the memory bus, and
//! against an Augur-style responder that knows nothing but EXPIRE, INVALIDATE
//! and NEW and echoes no `request_id`.

#![cfg(feature = "tokio")]

use async_trait::async_trait;
use keyman::protocol::{Request, decode_request};
use keyman::ratelimit::RateLimit;
use keyman::service::embedded::EmbeddedPool;
use keyman::service::{
    Bus, BusError, BusEvent, ClientConfig, KeyAdmin, KeyClient, KeyPublisher, KeySource, Next,
    Orchestrator, Subscription, wall_clock,
};
use keyman::{EngineConfig, KeyError, ManualClock, Timestamp};
use keyman_transport::MemoryBus;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// 2025-12-31T23:50:00Z: the embedded pool's clock at the start of each test.
const T0: u64 = 1_767_225_000;
const P: &str = "github_rest";

/// `secs` (Unix) as an HTTP date, as the `Date` header carries it.
fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Reads a response's headers, as a worker does.
fn headers(pairs: &[(&str, String)]) -> RateLimit {
    RateLimit::from_headers(pairs.iter().map(|(n, v)| (*n, v.as_bytes())))
}

/// GitHub's headers with `remaining` calls left and the window resetting at
/// `reset` (Unix seconds), and optionally the platform's `Date`.
fn github(remaining: u64, reset: u64, date: Option<u64>) -> RateLimit {
    let mut h = vec![
        ("x-ratelimit-limit", "5000".to_string()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-used", (5000 - remaining).to_string()),
        ("x-ratelimit-reset", reset.to_string()),
        ("x-ratelimit-resource", "core".to_string()),
    ];
    if let Some(d) = date {
        h.push(("date", http_date(d)));
    }
    headers(&h)
}

fn secs(t: u64) -> Timestamp {
    Timestamp::from_secs(t)
}

#[test]
fn http_dates_are_formatted_as_the_parser_reads_them() {
    assert_eq!(http_date(T0), "Wed, 31 Dec 2025 23:50:00 GMT");
    assert_eq!(
        keyman::ratelimit::parse_http_date(&http_date(T0)),
        Some(secs(T0))
    );
}

/// A pool with keys `ghp_a` and `ghp_b` on a manual clock at [`T0`], and the
/// key the first request got.
async fn pool_with_two_keys() -> (EmbeddedPool, Arc<ManualClock>, String, String) {
    let clock = Arc::new(ManualClock::new(secs(T0)));
    let pool = EmbeddedPool::builder()
        .with_clock(clock.clone())
        .with_deadline(Duration::from_secs(5))
        .with_seed(3)
        .build();
    pool.publish(P, "ghp_a").await.unwrap();
    pool.publish(P, "ghp_b").await.unwrap();
    let first = pool.request(P).await.unwrap();
    let other = if first == "ghp_a" { "ghp_b" } else { "ghp_a" }.to_string();
    (pool, clock, first, other)
}

async fn next_refresh(admin: &dyn KeyAdmin) -> Option<u64> {
    let status = admin.status().await.expect("status");
    status.iter().find(|s| s.platform == P)?.next_refresh
}

#[tokio::test]
async fn embedded_200_with_nothing_remaining_expires_the_key_until_the_reset() {
    let (pool, clock, first, other) = pool_with_two_keys().await;
    let next = pool
        .observe(P, &first, 200, &github(0, T0 + 600, Some(T0)))
        .await
        .unwrap();
    assert_eq!(
        next,
        Next::Expired {
            key: other.clone(),
            refresh_at: secs(T0 + 600),
            secondary: false
        }
    );
    assert_eq!(next.new_key(), Some(other.as_str()));
    assert_eq!(next_refresh(&pool).await, Some(T0 + 600));
    for _ in 0..20 {
        assert_eq!(pool.request(P).await.unwrap(), other);
    }
    // At the reset the key is back.
    clock.set(secs(T0 + 601));
    let status = pool.status().await.unwrap();
    assert_eq!((status[0].fresh, status[0].expired), (2, 0));
}

#[tokio::test]
async fn embedded_401_invalidates_the_key() {
    let (pool, _clock, first, other) = pool_with_two_keys().await;
    let next = pool
        .observe(P, &first, 401, &RateLimit::default())
        .await
        .unwrap();
    assert_eq!(next, Next::Invalidated { key: other.clone() });
    assert_eq!(pool.invalid_keys(P).await.unwrap(), vec![first]);
}

#[tokio::test]
async fn embedded_403_with_retry_after_expires_the_key_for_that_long() {
    let (pool, _clock, first, other) = pool_with_two_keys().await;
    // GitHub's secondary limit: calls remain, but "retry after 120 s".
    let mut h = vec![
        ("x-ratelimit-remaining", "4100".to_string()),
        ("x-ratelimit-reset", (T0 + 3000).to_string()),
        ("retry-after", "120".to_string()),
    ];
    h.push(("date", http_date(T0)));
    let next = pool.observe(P, &first, 403, &headers(&h)).await.unwrap();
    assert_eq!(
        next,
        Next::Expired {
            key: other,
            refresh_at: secs(T0 + 120),
            secondary: true
        }
    );
    assert_eq!(next_refresh(&pool).await, Some(T0 + 120));
}

#[tokio::test]
async fn embedded_403_with_calls_remaining_keeps_the_key() {
    let (pool, _clock, first, _other) = pool_with_two_keys().await;
    // A 403 for a resource the key may not read: the key is fine.
    let next = pool
        .observe(P, &first, 403, &github(4321, T0 + 3000, Some(T0)))
        .await
        .unwrap();
    assert_eq!(next, Next::Keep);
    assert_eq!(next.clone().into_key(first.clone()), first);
    // So does a 200 with calls left.
    let next = pool
        .observe(P, &first, 200, &github(1, T0 + 3000, Some(T0)))
        .await
        .unwrap();
    assert_eq!(next, Next::Keep);
    let status = pool.status().await.unwrap();
    assert_eq!((status[0].fresh, status[0].expired), (2, 0));
}

#[tokio::test]
async fn embedded_skew_in_date_moves_the_refresh_time() {
    // Our clock runs 30 s ahead of the platform's: its reset comes 30 s later by ours.
    let (pool, _clock, first, _) = pool_with_two_keys().await;
    let next = pool
        .observe(P, &first, 403, &github(0, T0 + 600, Some(T0 - 30)))
        .await
        .unwrap();
    assert!(
        matches!(next, Next::Expired { refresh_at, .. } if refresh_at == secs(T0 + 630)),
        "{next:?}"
    );
    assert_eq!(next_refresh(&pool).await, Some(T0 + 630));

    // Our clock runs 30 s behind: the reset comes 30 s earlier by ours.
    let (pool, _clock, first, _) = pool_with_two_keys().await;
    let next = pool
        .observe(P, &first, 403, &github(0, T0 + 600, Some(T0 + 30)))
        .await
        .unwrap();
    assert!(
        matches!(next, Next::Expired { refresh_at, .. } if refresh_at == secs(T0 + 570)),
        "{next:?}"
    );

    // No `Date`: the reset is taken as it is.
    let (pool, _clock, first, _) = pool_with_two_keys().await;
    let next = pool
        .observe(P, &first, 403, &github(0, T0 + 600, None))
        .await
        .unwrap();
    assert!(
        matches!(next, Next::Expired { refresh_at, .. } if refresh_at == secs(T0 + 600)),
        "{next:?}"
    );
}

#[tokio::test]
async fn embedded_observe_and_expire_within_keep_their_deadline() {
    let clock = Arc::new(ManualClock::new(secs(T0)));
    let pool = EmbeddedPool::builder()
        .with_clock(clock.clone())
        .with_deadline(Duration::from_secs(60))
        .build();
    pool.publish(P, "ghp_only").await.unwrap();
    let short = Duration::from_millis(200);
    let started = std::time::Instant::now();
    assert_eq!(
        pool.observe_within(P, "ghp_only", 200, &github(0, T0 + 600, None), short)
            .await,
        Err(KeyError::Timeout(short))
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        pool.expire_within(P, "ghp_only", secs(T0 + 900), short)
            .await,
        Err(KeyError::Timeout(short))
    );
    assert_eq!(
        pool.invalidate_within(P, "ghp_only", short).await,
        Err(KeyError::NoKeys(P.into()))
    );
}

#[test]
fn blocking_embedded_pool_observes_too() {
    let clock = Arc::new(ManualClock::new(secs(T0)));
    let pool = EmbeddedPool::builder()
        .with_clock(clock)
        .with_seed(5)
        .build()
        .blocking();
    pool.publish(P, "ghp_a").unwrap();
    pool.publish(P, "ghp_b").unwrap();
    let first = pool.request(P).unwrap();
    assert_eq!(pool.now(), secs(T0));
    assert_eq!(
        pool.observe(P, &first, 200, &github(10, T0 + 60, None)),
        Ok(Next::Keep)
    );
    let next = pool
        .observe(P, &first, 200, &github(0, T0 + 60, None))
        .unwrap();
    let second = next.new_key().expect("another key").to_string();
    assert_ne!(second, first);
    assert_eq!(
        pool.observe_within(
            P,
            &second,
            401,
            &RateLimit::default(),
            Duration::from_millis(100)
        ),
        Err(KeyError::Timeout(Duration::from_millis(100)))
    );
    assert_eq!(pool.invalid_keys(P), Ok(vec![second]));
}

#[tokio::test]
async fn next_does_not_show_keys_whole() {
    let next = Next::Expired {
        key: "ghp_0123456789abcdefSECRET".into(),
        refresh_at: secs(T0),
        secondary: false,
    };
    let shown = format!("{next:?}");
    assert!(!shown.contains("0123456789abcdefSECRET"), "{shown}");
    let shown = format!(
        "{:?}",
        Next::Invalidated {
            key: "ghp_0123456789abcdefSECRET".into()
        }
    );
    assert!(!shown.contains("0123456789abcdefSECRET"), "{shown}");
}

#[tokio::test]
async fn empty_names_are_refused_before_anything_is_reported() {
    let (pool, _clock, first, _) = pool_with_two_keys().await;
    let seen = github(0, T0 + 600, None);
    assert!(matches!(
        pool.observe(P, "", 200, &seen).await,
        Err(KeyError::InvalidArgument(_))
    ));
    assert!(matches!(
        pool.observe("", &first, 200, &seen).await,
        Err(KeyError::InvalidArgument(_))
    ));
    let status = pool.status().await.unwrap();
    assert_eq!((status[0].fresh, status[0].expired), (2, 0));
}

// --- remote: a KeyClient against keyman's orchestrator on the memory bus ---

fn config(deadline: Duration) -> ClientConfig {
    ClientConfig {
        deadline,
        resend_interval: Duration::from_millis(200),
        ..ClientConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_client_observes_against_keymans_orchestrator() {
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let orch = tokio::spawn(Orchestrator::new(bus.clone(), EngineConfig::default()).run());
    let admin = KeyPublisher::connect(bus.clone(), config(Duration::from_secs(5)))
        .await
        .unwrap();
    admin.ping().await.unwrap();
    for k in ["ghp_a", "ghp_b", "ghp_c", "ghp_d"] {
        admin.publish(P, k).await.unwrap();
    }
    admin.ping().await.unwrap();
    let worker = KeyClient::connect(bus.clone(), config(Duration::from_secs(5)))
        .await
        .unwrap();
    let now = wall_clock().as_secs();
    let reset = now + 600;

    // A 403 with calls left: the key stays, nothing changes.
    let k1 = worker.request(P).await.unwrap();
    let seen = github(4000, reset, Some(now));
    assert_eq!(worker.observe(P, &k1, 403, &seen).await, Ok(Next::Keep));

    // A 200 with nothing remaining, from a platform whose clock is 30 s behind ours.
    let next = worker
        .observe(P, &k1, 200, &github(0, reset, Some(now - 30)))
        .await
        .unwrap();
    let Next::Expired {
        key: k2,
        refresh_at,
        secondary: false,
    } = next
    else {
        panic!("not expired: {next:?}");
    };
    assert_ne!(k2, k1);
    let local = refresh_at.as_secs();
    assert!(
        (reset + 30..=reset + 31).contains(&local),
        "refresh at {local}, reset {reset}"
    );
    let status = admin.status().await.unwrap();
    assert_eq!((status[0].fresh, status[0].expired), (3, 1));
    let next = status[0].next_refresh.expect("a refresh time");
    assert!(
        (reset + 30..=reset + 32).contains(&next),
        "{next} vs {reset}"
    );

    // A 403 with Retry-After: expired for that long.
    let retry = headers(&[
        ("retry-after", "120".to_string()),
        ("x-ratelimit-remaining", "3000".to_string()),
    ]);
    let before = wall_clock();
    let next = worker.observe(P, &k2, 403, &retry).await.unwrap();
    let Next::Expired {
        key: k3,
        refresh_at,
        secondary: true,
    } = next
    else {
        panic!("not a secondary expiry: {next:?}");
    };
    assert!(refresh_at >= before.saturating_add(Duration::from_secs(120)));
    assert!(refresh_at <= wall_clock().saturating_add(Duration::from_secs(120)));

    // A 401: invalid.
    let next = worker
        .observe(P, &k3, 401, &RateLimit::default())
        .await
        .unwrap();
    let Next::Invalidated { key: k4 } = next else {
        panic!("not invalidated: {next:?}");
    };
    assert_eq!(admin.invalid_keys(P).await.unwrap(), vec![k3.clone()]);
    let mut all = vec![k1.clone(), k2.clone(), k3.clone(), k4.clone()];
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 4, "a key came back that should not have");

    // Per-call deadlines: with every other key out, expiring the last one ends
    // at the call's deadline.
    let short = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let later = wall_clock().saturating_add(Duration::from_secs(60));
    assert_eq!(
        worker.expire_within(P, &k4, later, short).await,
        Err(KeyError::Timeout(short))
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250),
        "gave up early: {took:?}"
    );
    assert!(took < Duration::from_secs(2), "gave up late: {took:?}");
    admin.shutdown().await.unwrap();
    orch.await.unwrap().unwrap();
}

// --- remote: a KeyClient against a responder that knows only Augur's protocol ---

/// A memory bus that hides its native request/reply, so clients use reply
/// channels, as they do with Augur's orchestrator over Redis.
struct PubSubOnly(MemoryBus);

#[async_trait]
impl Bus for PubSubOnly {
    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), BusError> {
        self.0.publish(channel, payload).await
    }
    async fn subscribe(&self, channels: &[String]) -> Result<Subscription, BusError> {
        self.0.subscribe(channels).await
    }
}

/// What the responder saw, in order.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    New,
    /// A message type Augur's orchestrator does not know (it would stop).
    Report,
    Expire {
        key: String,
        refresh_secs: u64,
    },
    Invalidate {
        key: String,
    },
}

/// Answers NEW with the next of `keys`, as Augur's orchestrator does
/// (`{"key": ...}`, no `request_id`), and tells what it saw.
fn augur_responder(
    mem: MemoryBus,
    mut requests: Subscription,
    keys: Vec<&'static str>,
) -> mpsc::UnboundedReceiver<Seen> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut next = keys.into_iter().cycle();
        while let Some(event) = requests.next().await {
            let BusEvent::Message(m) = event else {
                continue;
            };
            let Ok(request) = decode_request(&m.payload, 1 << 16) else {
                continue;
            };
            // Tells what it saw before answering, so the test sees it once
            // the client has its answer.
            let seen = match request {
                // Augur's orchestrator reads a NEW with `lease` as a NEW.
                Request::New { reply, .. } | Request::Lease { reply, .. } => {
                    if tx.send(Seen::New).is_err() {
                        return;
                    }
                    let channel = format!("worker-oath-request-{}", reply.requester_id);
                    let key = next.next().unwrap_or("none");
                    let body = format!("{{\"key\": \"{key}\"}}");
                    let _ = mem.publish(&channel, body.as_bytes()).await;
                    continue;
                }
                Request::Expire {
                    key, refresh_time, ..
                } => Seen::Expire {
                    key,
                    refresh_secs: refresh_time.as_millis().div_ceil(1000),
                },
                Request::Invalidate { key, .. } => Seen::Invalidate { key },
                Request::Report { .. } => Seen::Report,
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_client_falls_back_to_expire_and_new_against_augurs_orchestrator() {
    let mem = MemoryBus::new();
    let bus: Arc<dyn Bus> = Arc::new(PubSubOnly(mem.clone()));
    let requests = mem
        .subscribe(&["worker-oath-request".to_string()])
        .await
        .unwrap();
    let mut seen = augur_responder(mem, requests, vec!["ghp_b", "ghp_c", "ghp_d"]);
    let worker = KeyClient::connect(bus, config(Duration::from_secs(3)))
        .await
        .unwrap();
    let now = wall_clock().as_secs();
    let reset = now + 900;
    let recv = |seen: &mut mpsc::UnboundedReceiver<Seen>| {
        seen.try_recv()
            .unwrap_or_else(|e| panic!("nothing seen: {e}"))
    };

    // A 403 with calls left sends nothing at all.
    assert_eq!(
        worker
            .observe(P, "ghp_a", 403, &github(12, reset, Some(now)))
            .await,
        Ok(Next::Keep)
    );
    assert!(seen.try_recv().is_err(), "a kept key was reported");

    // A spent quota: EXPIRE with the reset, then NEW, answered without request_id.
    let next = worker
        .observe(P, "ghp_a", 200, &github(0, reset, None))
        .await
        .unwrap();
    assert_eq!(
        next,
        Next::Expired {
            key: "ghp_b".into(),
            refresh_at: secs(reset),
            secondary: false
        }
    );
    assert_eq!(
        recv(&mut seen),
        Seen::Expire {
            key: "ghp_a".into(),
            refresh_secs: reset
        }
    );
    assert_eq!(recv(&mut seen), Seen::New);

    // A 401: INVALIDATE, then NEW.
    let next = worker
        .observe(P, "ghp_b", 401, &RateLimit::default())
        .await
        .unwrap();
    assert_eq!(
        next,
        Next::Invalidated {
            key: "ghp_c".into()
        }
    );
    assert_eq!(
        recv(&mut seen),
        Seen::Invalidate {
            key: "ghp_b".into()
        }
    );
    assert_eq!(recv(&mut seen), Seen::New);

    // The same through the blocking-style deadlines.
    let next = worker
        .observe_within(
            P,
            "ghp_c",
            429,
            &RateLimit::default(),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    assert!(
        matches!(&next, Next::Expired { key, secondary: true, .. } if key == "ghp_d"),
        "{next:?}"
    );
    assert!(matches!(recv(&mut seen), Seen::Expire { key, .. } if key == "ghp_c"));
    assert_eq!(recv(&mut seen), Seen::New);
    assert_eq!(
        worker
            .invalidate_within(P, "ghp_d", Duration::from_secs(2))
            .await,
        Ok("ghp_b".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_fall_back_to_plain_keys_and_send_no_report_to_augurs_orchestrator() {
    let mem = MemoryBus::new();
    let bus: Arc<dyn Bus> = Arc::new(PubSubOnly(mem.clone()));
    let requests = mem
        .subscribe(&["worker-oath-request".to_string()])
        .await
        .unwrap();
    let mut seen = augur_responder(mem, requests, vec!["ghp_a", "ghp_b", "ghp_c"]);
    let worker = KeyClient::connect(bus, config(Duration::from_secs(3)))
        .await
        .unwrap();
    let now = wall_clock().as_secs();
    let reset = now + 900;

    // NEW with `lease` is answered as a NEW: a key without a lease.
    let mut leased = worker.lease(P, 100).await.expect("a key");
    assert_eq!(leased.key(), "ghp_a");
    assert_eq!(leased.lease(), None);
    assert_eq!(seen.try_recv(), Ok(Seen::New));

    // Calls go on until the platform refuses one: no renewal, no REPORT.
    for remaining in (1..200).rev() {
        let next = worker
            .observe_lease(&mut leased, 200, &github(remaining, reset, Some(now)))
            .await;
        assert_eq!(next, Ok(Next::Keep));
    }
    assert!(seen.try_recv().is_err(), "sent while the key was fine");

    // A spent quota: EXPIRE and NEW, as Augur's own workers send them.
    let next = worker
        .observe_lease(&mut leased, 403, &github(0, reset, Some(now)))
        .await
        .expect("another key");
    assert!(
        matches!(&next, Next::Expired { key, .. } if key == "ghp_b"),
        "{next:?}"
    );
    assert_eq!(leased.key(), "ghp_b");
    assert!(matches!(seen.try_recv(), Ok(Seen::Expire { key, .. }) if key == "ghp_a"));
    assert_eq!(seen.try_recv(), Ok(Seen::New));
    worker.release(leased).await.expect("release");
    assert!(
        seen.try_recv().is_err(),
        "release sent something to Augur's orchestrator"
    );
}

#[tokio::test]
async fn an_embedded_lease_never_returned_ends_at_its_deadline_counted_as_used() {
    let start = Timestamp::from_secs(1_767_225_000);
    let clock = Arc::new(ManualClock::new(start));
    let pool = EmbeddedPool::builder()
        .with_clock(clock.clone())
        .with_deadline(Duration::from_millis(300))
        .with_quota(keyman::QuotaConfig {
            lease_ttl: Duration::from_secs(60),
            ..keyman::QuotaConfig::default()
        })
        .build();
    pool.publish_account(P, "ghp_a", None, Some(10))
        .await
        .unwrap();
    let leased = pool.lease(P, 6).await.expect("a lease");
    assert_eq!(leased.lease().map(|l| l.calls), Some(6));
    assert_eq!(
        leased.lease().map(|l| l.until),
        Some(Timestamp::from_secs(start.as_secs() + 60))
    );
    // Never returned: 4 calls are left to lend until it ends.
    let second = pool.lease(P, 6).await.expect("a second lease");
    assert_eq!(second.lease().map(|l| l.calls), Some(4));
    pool.release(second).await.unwrap();
    // At its deadline the lease ends, counted as fully used: 10 - 6 = 4 left.
    clock.set(Timestamp::from_secs(start.as_secs() + 61));
    let status = pool.status().await.unwrap();
    let third = pool.lease(P, 6).await.expect("a lease after the deadline");
    assert_eq!(third.lease().map(|l| l.calls), Some(4), "{status:?}");
    drop(leased);
}
