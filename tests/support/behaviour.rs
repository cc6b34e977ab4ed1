//! Behaviours every key source shows its user, whatever is behind it: the
//! embedded pool, or the remote `KeyClient` / `KeyPublisher` over Redis or NATS.
//!
//! Each behaviour is an async function that takes a worker's handle
//! (`Arc<dyn KeySource>`), an admin's handle (`Arc<dyn KeyAdmin>`) on the same
//! pool, and a platform-name `prefix` unique to the call, and panics when the
//! behaviour is not there. Every platform it touches starts with the prefix, so
//! one server can serve all of them, in sequence or at the same time. Publishes
//! are followed by [`KeyAdmin::ping`], which a remote orchestrator answers only
//! after it has handled them.
//!
//! How to run them against a new kind of source, in a file of `tests/`:
//!
//! ```ignore
//! mod support;
//!
//! async fn setup() -> (Arc<dyn KeySource>, Arc<dyn KeyAdmin>) {
//!     // connect a client and a publisher to a running orchestrator (or make a pool)
//! }
//!
//! // one #[tokio::test] per behaviour, each with its own prefix:
//! support::behaviour::behaviour_tests!(setup);
//!
//! // or one by one:
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn publish_then_request() {
//!     let (source, admin) = setup().await;
//!     let prefix = support::behaviour::unique_prefix("publish");
//!     support::behaviour::publish_then_request_gets_that_key(source, admin, &prefix).await;
//! }
//! ```
//!
//! The source's default deadline must be at least 5 s (the refresh test waits
//! about 2 s for a key). [`waiting_request_is_woken_by_a_publish`] needs a source
//! that wakes waiting requests on a publish (the embedded pool does); a client
//! that only asks again after the orchestrator's `{"wait": n}` hint cannot pass it.

// Each file that declares `mod support;` uses only part of this module.
#![allow(unused_macros, unused_imports)]

use keyman::KeyError;
use keyman::service::{KeyAdmin, KeySource, wall_clock};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod quota;
pub use quota::*;

/// A worker's handle, as the behaviours take it.
pub type Source = Arc<dyn KeySource>;
/// An admin's handle on the same pool, as the behaviours take it.
pub type Admin = Arc<dyn KeyAdmin>;

/// A prefix no other call in this or any earlier run has used: `label`, the
/// process id, a counter and the time.
pub fn unique_prefix(label: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{label}-{}-{n}-{}",
        std::process::id(),
        wall_clock().as_millis()
    )
}

/// How late a call may return after its deadline.
const SLACK: Duration = Duration::from_millis(1000);

fn platform(prefix: &str, name: &str) -> String {
    format!("{prefix}-{name}")
}

fn key(prefix: &str, name: &str) -> String {
    format!("tok_{prefix}_{name}")
}

async fn publish_all(admin: &Admin, platform: &str, keys: &[&String]) {
    for k in keys {
        admin
            .publish(platform, k)
            .await
            .unwrap_or_else(|e| panic!("publish to {platform}: {e}"));
    }
    admin.ping().await.expect("ping after publishing");
}

/// Marks `key` rate limited until `reset` without waiting for the next key
/// (which does not come while `key` is the only one): the report is sent, the
/// wait for a key that follows is cut short.
async fn expire_only_key(source: &Source, platform: &str, key: &str, reset: keyman::Timestamp) {
    let outcome = tokio::time::timeout(
        Duration::from_millis(300),
        source.expire(platform, key, reset),
    )
    .await;
    assert!(
        outcome.is_err(),
        "the only key was reported rate limited, yet a key came back: {outcome:?}"
    );
}

/// A published key is what a request on its platform gets.
pub async fn publish_then_request_gets_that_key(source: Source, admin: Admin, prefix: &str) {
    let p = platform(prefix, "rest");
    let k = key(prefix, "only");
    publish_all(&admin, &p, &[&k]).await;
    assert_eq!(source.request(&p).await, Ok(k));
}

/// A request on a platform nobody published to fails at once with
/// `UnknownPlatform`, instead of hanging.
pub async fn request_on_unknown_platform_is_unknown_platform(
    source: Source,
    _admin: Admin,
    prefix: &str,
) {
    let p = platform(prefix, "never-published");
    let started = Instant::now();
    assert_eq!(
        source.request(&p).await,
        Err(KeyError::UnknownPlatform(p.clone()))
    );
    assert!(started.elapsed() < SLACK, "took {:?}", started.elapsed());
}

/// Once every key of a platform is invalid, requests fail with `NoKeys`.
pub async fn all_keys_invalidated_is_no_keys(source: Source, admin: Admin, prefix: &str) {
    let p = platform(prefix, "rest");
    let (a, b) = (key(prefix, "a"), key(prefix, "b"));
    publish_all(&admin, &p, &[&a, &b]).await;
    assert_eq!(source.invalidate(&p, &a).await, Ok(b.clone()));
    assert_eq!(
        source.invalidate(&p, &b).await,
        Err(KeyError::NoKeys(p.clone()))
    );
    assert_eq!(source.request(&p).await, Err(KeyError::NoKeys(p.clone())));
}

/// When the only key is rate limited for two seconds, a request waits and then
/// gets it back.
pub async fn expired_only_key_is_handed_out_once_it_refreshes(
    source: Source,
    admin: Admin,
    prefix: &str,
) {
    let p = platform(prefix, "rest");
    let k = key(prefix, "only");
    publish_all(&admin, &p, &[&k]).await;
    let reset = wall_clock().saturating_add(Duration::from_secs(2));
    let started = Instant::now();
    assert_eq!(source.expire(&p, &k, reset).await, Ok(k.clone()));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "the key came back before its refresh time, after {waited:?}"
    );
    assert!(
        waited <= Duration::from_secs(2) + SLACK + SLACK,
        "the key came back long after its refresh time, after {waited:?}"
    );
}

/// When the only key is rate limited for a minute, a request with a short
/// deadline fails with `Timeout(deadline)`, about when the deadline passes.
pub async fn request_times_out_when_no_key_refreshes_in_time(
    source: Source,
    admin: Admin,
    prefix: &str,
) {
    let p = platform(prefix, "rest");
    let k = key(prefix, "only");
    publish_all(&admin, &p, &[&k]).await;
    let reset = wall_clock().saturating_add(Duration::from_secs(60));
    expire_only_key(&source, &p, &k, reset).await;
    let deadline = Duration::from_millis(500);
    let started = Instant::now();
    assert_eq!(
        source.request_within(&p, deadline).await,
        Err(KeyError::Timeout(deadline))
    );
    let took = started.elapsed();
    assert!(
        took >= deadline - Duration::from_millis(50),
        "gave up early: {took:?}"
    );
    assert!(took <= deadline + SLACK, "gave up late: {took:?}");
}

/// Invalidating a key returns another one, and the invalid key is never handed
/// out again.
pub async fn invalidated_key_is_never_handed_out_again(source: Source, admin: Admin, prefix: &str) {
    let p = platform(prefix, "rest");
    let (a, b, c) = (key(prefix, "a"), key(prefix, "b"), key(prefix, "c"));
    publish_all(&admin, &p, &[&a, &b, &c]).await;
    let next = source.invalidate(&p, &a).await.expect("another key");
    assert!(next == b || next == c, "got {next}");
    for _ in 0..200 {
        let got = source.request(&p).await.expect("a key");
        assert_ne!(got, a, "an invalidated key was handed out");
    }
    assert_eq!(admin.invalid_keys(&p).await, Ok(vec![a.clone()]));
}

/// Reporting a key as rate limited returns another key, and the limited key is
/// not handed out before its reset time.
pub async fn expire_returns_another_key(source: Source, admin: Admin, prefix: &str) {
    let p = platform(prefix, "rest");
    let (a, b) = (key(prefix, "a"), key(prefix, "b"));
    publish_all(&admin, &p, &[&a, &b]).await;
    let reset = wall_clock().saturating_add(Duration::from_secs(3600));
    assert_eq!(source.expire(&p, &a, reset).await, Ok(b.clone()));
    for _ in 0..50 {
        assert_eq!(source.request(&p).await, Ok(b.clone()));
    }
}

/// Publishing the same key again changes nothing: it is listed once.
pub async fn publish_is_idempotent(source: Source, admin: Admin, prefix: &str) {
    let p = platform(prefix, "rest");
    let (a, b) = (key(prefix, "a"), key(prefix, "b"));
    publish_all(&admin, &p, &[&a, &a, &b, &a]).await;
    let mut keys = admin.keys(&p).await.expect("keys");
    keys.sort();
    assert_eq!(keys, vec![a.clone(), b.clone()]);
    assert_eq!(source.request(&p).await.map(|k| k == a || k == b), Ok(true));
}

/// An unpublished key leaves the rotation and the listing.
pub async fn unpublish_removes_key_from_rotation(source: Source, admin: Admin, prefix: &str) {
    let p = platform(prefix, "rest");
    let (a, b) = (key(prefix, "a"), key(prefix, "b"));
    publish_all(&admin, &p, &[&a, &b]).await;
    admin.unpublish(&p, &a).await.expect("unpublish");
    admin.ping().await.expect("ping");
    for _ in 0..100 {
        assert_eq!(source.request(&p).await, Ok(b.clone()));
    }
    assert_eq!(admin.keys(&p).await, Ok(vec![b.clone()]));
}

/// Platforms, keys and invalid keys are listed; listing an unknown platform
/// fails with `UnknownPlatform`.
pub async fn platforms_keys_and_invalid_keys_are_listed(
    source: Source,
    admin: Admin,
    prefix: &str,
) {
    let (p1, p2) = (platform(prefix, "rest"), platform(prefix, "graphql"));
    let (a, b, c) = (key(prefix, "a"), key(prefix, "b"), key(prefix, "c"));
    publish_all(&admin, &p1, &[&a, &b]).await;
    publish_all(&admin, &p2, &[&c]).await;
    source.invalidate(&p1, &b).await.expect("another key");
    let platforms = admin.platforms().await.expect("platforms");
    assert!(
        platforms.contains(&p1) && platforms.contains(&p2),
        "{platforms:?}"
    );
    assert_eq!(admin.keys(&p1).await, Ok(vec![a.clone()]));
    assert_eq!(admin.invalid_keys(&p1).await, Ok(vec![b.clone()]));
    assert_eq!(admin.keys(&p2).await, Ok(vec![c.clone()]));
    assert_eq!(admin.invalid_keys(&p2).await, Ok(vec![]));
    let unknown = platform(prefix, "unknown");
    assert_eq!(
        admin.keys(&unknown).await,
        Err(KeyError::UnknownPlatform(unknown.clone()))
    );
    assert_eq!(
        admin.invalid_keys(&unknown).await,
        Err(KeyError::UnknownPlatform(unknown.clone()))
    );
}

/// The status counts a platform's fresh, expired and invalid keys and tells
/// when the next one refreshes.
pub async fn status_counts_keys_in_each_state(source: Source, admin: Admin, prefix: &str) {
    let p = platform(prefix, "rest");
    let (a, b, c) = (key(prefix, "a"), key(prefix, "b"), key(prefix, "c"));
    publish_all(&admin, &p, &[&a, &b, &c]).await;
    let reset = wall_clock().saturating_add(Duration::from_secs(3600));
    source.expire(&p, &a, reset).await.expect("another key");
    assert_eq!(source.invalidate(&p, &b).await, Ok(c.clone()));
    let status = admin.status().await.expect("status");
    let ours = status
        .iter()
        .find(|s| s.platform == p)
        .unwrap_or_else(|| panic!("{p} missing from the status"));
    assert_eq!(
        (ours.fresh, ours.expired, ours.invalid),
        (1, 1, 1),
        "{ours:?}"
    );
    assert_eq!(ours.next_refresh, Some(reset.as_millis().div_ceil(1000)));
}

/// An EXPIRE far in the future (a wrong reset header) is cut to the longest
/// expiry (`EngineConfig::max_expiry`, 25 h by default): the status tells that
/// the key refreshes then, not in ten years.
pub async fn expire_far_in_the_future_is_cut_to_the_longest_expiry(
    source: Source,
    admin: Admin,
    prefix: &str,
) {
    let p = platform(prefix, "rest");
    let (a, b) = (key(prefix, "a"), key(prefix, "b"));
    publish_all(&admin, &p, &[&a, &b]).await;
    let longest = keyman::EngineConfig::default().max_expiry;
    let years = Duration::from_secs(10 * 365 * 24 * 3600);
    let before = wall_clock();
    assert_eq!(
        source.expire(&p, &a, before.saturating_add(years)).await,
        Ok(b.clone())
    );
    let after = wall_clock();
    let status = admin.status().await.expect("status");
    let ours = status
        .iter()
        .find(|s| s.platform == p)
        .unwrap_or_else(|| panic!("{p} missing from the status"));
    assert_eq!((ours.fresh, ours.expired), (1, 1), "{ours:?}");
    let next = ours.next_refresh.expect("a next refresh");
    let earliest = before.saturating_add(longest).as_secs();
    let latest = after.saturating_add(longest).as_millis().div_ceil(1000);
    assert!(
        (earliest..=latest).contains(&next),
        "refreshes at {next}, not within the longest expiry ({earliest}..={latest})"
    );
}

/// Many tasks requesting keys at once from one handle are all served.
pub async fn concurrent_requests_from_many_tasks_all_succeed(
    source: Source,
    admin: Admin,
    prefix: &str,
) {
    let p = platform(prefix, "rest");
    let keys: Vec<String> = (0..4).map(|i| key(prefix, &i.to_string())).collect();
    publish_all(&admin, &p, &keys.iter().collect::<Vec<_>>()).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let source = source.clone();
        let p = p.clone();
        tasks.spawn(async move {
            let mut got = Vec::new();
            for _ in 0..20 {
                got.push(source.request(&p).await);
            }
            got
        });
    }
    let mut served = 0;
    while let Some(done) = tasks.join_next().await {
        for got in done.expect("a task panicked") {
            let k = got.expect("every concurrent request gets a key");
            assert!(keys.contains(&k), "a key that was never published");
            served += 1;
        }
    }
    assert_eq!(served, 32 * 20);
}

/// A request waiting because every key is rate limited gets a key as soon as one
/// is published, long before its deadline.
pub async fn waiting_request_is_woken_by_a_publish(source: Source, admin: Admin, prefix: &str) {
    let p = platform(prefix, "rest");
    let (a, b) = (key(prefix, "a"), key(prefix, "b"));
    publish_all(&admin, &p, &[&a]).await;
    let reset = wall_clock().saturating_add(Duration::from_secs(60));
    expire_only_key(&source, &p, &a, reset).await;
    let deadline = Duration::from_secs(20);
    let started = Instant::now();
    let waiting = {
        let source = source.clone();
        let p = p.clone();
        tokio::spawn(async move { source.request_within(&p, deadline).await })
    };
    // Nothing the traits expose says the request is waiting; give it time to start.
    tokio::time::sleep(Duration::from_millis(200)).await;
    admin.publish(&p, &b).await.expect("publish");
    let got = waiting.await.expect("the waiting task panicked");
    assert_eq!(got, Ok(b));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "the publish did not wake the waiting request: it returned after {took:?}"
    );
}

/// Empty platform names and keys are refused with `InvalidArgument`.
pub async fn empty_names_are_invalid_arguments(source: Source, admin: Admin, prefix: &str) {
    let p = platform(prefix, "rest");
    let k = key(prefix, "a");
    let invalid = |r: Result<(), KeyError>, what: &str| {
        assert!(
            matches!(r, Err(KeyError::InvalidArgument(_))),
            "{what}: {r:?}"
        );
    };
    invalid(source.request("").await.map(drop), "request(\"\")");
    invalid(
        source.expire(&p, "", wall_clock()).await.map(drop),
        "expire with an empty key",
    );
    invalid(
        source.invalidate(&p, "").await.map(drop),
        "invalidate with an empty key",
    );
    invalid(admin.publish(&p, "").await, "publish an empty key");
    invalid(admin.publish("", &k).await, "publish to an empty platform");
    invalid(admin.unpublish(&p, "").await, "unpublish an empty key");
}

/// Generates one `#[tokio::test]` per behaviour of this module, each with its own
/// prefix, calling `$setup().await` for a `(Source, Admin)` pair.
macro_rules! behaviour_tests {
    ($setup:path) => {
        $crate::support::behaviour::behaviour_tests!(
            @tests $setup;
            publish_then_request_gets_that_key,
            request_on_unknown_platform_is_unknown_platform,
            all_keys_invalidated_is_no_keys,
            expired_only_key_is_handed_out_once_it_refreshes,
            request_times_out_when_no_key_refreshes_in_time,
            invalidated_key_is_never_handed_out_again,
            expire_returns_another_key,
            publish_is_idempotent,
            unpublish_removes_key_from_rotation,
            platforms_keys_and_invalid_keys_are_listed,
            status_counts_keys_in_each_state,
            expire_far_in_the_future_is_cut_to_the_longest_expiry,
            concurrent_requests_from_many_tasks_all_succeed,
            waiting_request_is_woken_by_a_publish,
            empty_names_are_invalid_arguments,
            observe_keeps_expires_or_invalidates_the_key,
            expire_and_invalidate_within_keep_their_deadline,
            a_lease_lends_calls_and_is_renewed_when_they_are_used,
            leases_never_lend_more_than_is_left,
            a_refused_call_ends_the_lease_and_leases_another_key,
        );
    };
    (@tests $setup:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (source, admin) = $setup().await;
                let prefix = $crate::support::behaviour::unique_prefix(stringify!($name));
                $crate::support::behaviour::$name(source, admin, &prefix).await;
            }
        )*
    };
}

pub(crate) use behaviour_tests;
