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

/// After a response, `observe` keeps the key on a 403 with calls left, expires
/// it until the reset on a 200 with none left (and hands out another), and
/// invalidates it on a 401; refused arguments change nothing.
pub async fn observe_keeps_expires_or_invalidates_the_key(
    source: Source,
    admin: Admin,
    prefix: &str,
) {
    use keyman::ratelimit::RateLimit;
    use keyman::service::Next;
    let p = platform(prefix, "rest");
    let (a, b, c) = (key(prefix, "a"), key(prefix, "b"), key(prefix, "c"));
    publish_all(&admin, &p, &[&a, &b, &c]).await;
    let reset = wall_clock().as_secs() + 3600;
    let headers = |remaining: u64| {
        let h = [
            ("x-ratelimit-limit", "5000".to_string()),
            ("x-ratelimit-remaining", remaining.to_string()),
            ("x-ratelimit-reset", reset.to_string()),
        ];
        RateLimit::from_headers(h.iter().map(|(n, v)| (*n, v.as_bytes())))
    };
    let invalid = |r: Result<Next, KeyError>, what: &str| {
        assert!(
            matches!(r, Err(KeyError::InvalidArgument(_))),
            "{what}: {r:?}"
        );
    };
    invalid(
        source.observe(&p, "", 200, &headers(0)).await,
        "observe with an empty key",
    );
    invalid(
        source.observe("", &a, 401, &headers(0)).await,
        "observe on an empty platform",
    );

    let first = source.request(&p).await.expect("a key");
    assert_eq!(
        source.observe(&p, &first, 403, &headers(17)).await,
        Ok(Next::Keep)
    );
    let second = match source.observe(&p, &first, 200, &headers(0)).await {
        Ok(Next::Expired {
            key,
            refresh_at,
            secondary: false,
        }) => {
            assert_eq!(refresh_at, keyman::Timestamp::from_secs(reset));
            key
        }
        other => panic!("a spent key was not expired: {other:?}"),
    };
    assert_ne!(second, first);
    let third = match source
        .observe(&p, &second, 401, &RateLimit::default())
        .await
    {
        Ok(Next::Invalidated { key }) => key,
        other => panic!("a rejected key was not invalidated: {other:?}"),
    };
    assert!(third != first && third != second, "got a reported key back");
    for _ in 0..20 {
        assert_eq!(source.request(&p).await.as_ref(), Ok(&third));
    }
    assert_eq!(admin.invalid_keys(&p).await, Ok(vec![second.clone()]));
    let status = admin.status().await.expect("status");
    let ours = status
        .iter()
        .find(|s| s.platform == p)
        .unwrap_or_else(|| panic!("{p} missing from the status"));
    assert_eq!(
        (ours.fresh, ours.expired, ours.invalid, ours.next_refresh),
        (1, 1, 1, Some(reset)),
        "{ours:?}"
    );
}

/// `expire_within` and `invalidate_within` end at their own deadline when no
/// other key comes, however long the source's default deadline is.
pub async fn expire_and_invalidate_within_keep_their_deadline(
    source: Source,
    admin: Admin,
    prefix: &str,
) {
    let p = platform(prefix, "rest");
    let (a, b) = (key(prefix, "a"), key(prefix, "b"));
    publish_all(&admin, &p, &[&a, &b]).await;
    let deadline = Duration::from_millis(500);
    let reset = wall_clock().saturating_add(Duration::from_secs(60));
    let started = Instant::now();
    let other = source
        .expire_within(&p, &a, reset, deadline)
        .await
        .expect("the other key");
    assert_eq!(other, b);
    let started_last = Instant::now();
    assert_eq!(
        source.expire_within(&p, &b, reset, deadline).await,
        Err(KeyError::Timeout(deadline))
    );
    let took = started_last.elapsed();
    assert!(
        took >= deadline - Duration::from_millis(50),
        "gave up early: {took:?}"
    );
    assert!(took <= deadline + SLACK, "gave up late: {took:?}");
    assert_eq!(
        source.invalidate_within(&p, &b, deadline).await,
        Err(KeyError::Timeout(deadline))
    );
    assert!(started.elapsed() <= 3 * deadline + SLACK + SLACK);
}

/// The rate-limit headers of a GitHub response: `remaining` of `limit` calls
/// left until `reset` (Unix seconds).
fn github_headers(limit: u64, remaining: u64, reset: u64) -> keyman::ratelimit::RateLimit {
    let h = [
        ("x-ratelimit-limit", limit.to_string()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-reset", reset.to_string()),
        ("x-ratelimit-resource", "core".to_string()),
    ];
    keyman::ratelimit::RateLimit::from_headers(h.iter().map(|(n, v)| (*n, v.as_bytes())))
}

/// The calls lent with `leased`, or a panic naming `what` if it has no lease.
fn lent(leased: &keyman::ratelimit::LeasedKey, what: &str) -> u64 {
    leased
        .lease()
        .unwrap_or_else(|| panic!("{what}: a key without a lease: {leased:?}"))
        .calls
}

/// A lease lends at most what the key's account has left; the worker makes
/// exactly the calls lent, then `observe_lease` returns the lease (with what
/// the headers said) and takes the next, which lends no more than the last
/// response said is left.
pub async fn a_lease_lends_calls_and_is_renewed_when_they_are_used(
    source: Source,
    admin: Admin,
    prefix: &str,
) {
    use keyman::service::Next;
    let p = platform(prefix, "rest");
    let k = key(prefix, "only");
    admin
        .publish_account(&p, &k, None, Some(10))
        .await
        .expect("publish with a limit");
    admin.ping().await.expect("ping after publishing");
    let reset = wall_clock().as_secs() + 3600;

    let mut leased = source.lease(&p, 4).await.expect("a lease");
    assert_eq!(leased.key(), k);
    assert_eq!(lent(&leased, "first lease"), 4, "the hint allows 10");
    let mut remaining = 10;
    for call in 1..=4 {
        remaining -= 1;
        let next = source
            .observe_lease(&mut leased, 200, &github_headers(10, remaining, reset))
            .await
            .expect("observe");
        if call < 4 {
            assert_eq!(next, Next::Keep, "call {call} of 4");
            assert_eq!(leased.calls_left(), Some(4 - call));
        } else {
            assert_eq!(next, Next::Renewed { key: k.clone() }, "after the 4th call");
        }
    }
    assert_eq!(lent(&leased, "second lease"), 4, "6 calls are left");
    for _ in 1..=4 {
        remaining -= 1;
        source
            .observe_lease(&mut leased, 200, &github_headers(10, remaining, reset))
            .await
            .expect("observe");
    }
    assert_eq!(
        lent(&leased, "third lease"),
        2,
        "the last response said 2 calls are left"
    );
    source.release(leased).await.expect("release");
}

/// Leases of one key never lend more than it has left: once its calls are
/// lent, a lease waits (here: times out); a lease returned unused lends its
/// calls again.
pub async fn leases_never_lend_more_than_is_left(source: Source, admin: Admin, prefix: &str) {
    let p = platform(prefix, "rest");
    let k = key(prefix, "only");
    admin
        .publish_account(&p, &k, None, Some(10))
        .await
        .expect("publish with a limit");
    admin.ping().await.expect("ping after publishing");

    let first = source.lease(&p, 8).await.expect("first lease");
    assert_eq!(lent(&first, "first lease"), 8);
    let second = source.lease(&p, 8).await.expect("second lease");
    assert_eq!(lent(&second, "second lease"), 2, "10 - 8 are left to lend");
    let deadline = Duration::from_millis(600);
    match source.lease_within(&p, 1, deadline).await {
        Err(KeyError::Timeout(d)) => assert_eq!(d, deadline),
        other => panic!("a key with nothing left to lend lent: {other:?}"),
    }
    let status = admin.status().await.expect("status");
    let ours = status
        .iter()
        .find(|s| s.platform == p)
        .expect("our platform");
    assert_eq!(ours.leased, Some(10), "{ours:?}");

    source.release(first).await.expect("release");
    let third = source.lease(&p, 8).await.expect("a lease after a release");
    assert_eq!(lent(&third, "after the release"), 8);
    source.release(second).await.expect("release");
    source.release(third).await.expect("release");
    admin.ping().await.expect("ping after the releases");
    let status = admin.status().await.expect("status");
    let ours = status
        .iter()
        .find(|s| s.platform == p)
        .expect("our platform");
    assert_eq!(ours.leased, None, "every lease was returned: {ours:?}");
}

/// A lease ends early when the platform refuses a call: a 403 with no calls
/// left returns the lease, expires the key until the reset and leases
/// another key; a 401 invalidates the key and leases another.
pub async fn a_refused_call_ends_the_lease_and_leases_another_key(
    source: Source,
    admin: Admin,
    prefix: &str,
) {
    use keyman::service::Next;
    let p = platform(prefix, "rest");
    let (a, b, c) = (key(prefix, "a"), key(prefix, "b"), key(prefix, "c"));
    publish_all(&admin, &p, &[&a, &b, &c]).await;
    let reset = wall_clock().as_secs() + 3600;

    let mut leased = source.lease(&p, 50).await.expect("a lease");
    let first = leased.key().to_string();
    let next = source
        .observe_lease(&mut leased, 403, &github_headers(5000, 0, reset))
        .await
        .expect("observe a 403");
    let second = match next {
        Next::Expired {
            key,
            refresh_at,
            secondary: false,
        } => {
            assert_eq!(refresh_at, keyman::Timestamp::from_secs(reset));
            key
        }
        other => panic!("a spent key was not expired: {other:?}"),
    };
    assert_ne!(second, first);
    assert_eq!(leased.key(), second);
    let next = source
        .observe_lease(&mut leased, 401, &keyman::ratelimit::RateLimit::default())
        .await
        .expect("observe a 401");
    let third = next.new_key().expect("another key").to_string();
    assert!(matches!(next, Next::Invalidated { .. }), "{next:?}");
    assert!(third != first && third != second);
    assert_eq!(admin.invalid_keys(&p).await, Ok(vec![second]));
    let status = admin.status().await.expect("status");
    let ours = status
        .iter()
        .find(|s| s.platform == p)
        .expect("our platform");
    assert_eq!(
        (ours.fresh, ours.expired, ours.invalid),
        (1, 1, 1),
        "{ours:?}"
    );
    source.release(leased).await.expect("release");
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
