//! The quota behaviours: `observe` of a response's status and headers, and
//! leases of calls.

use super::*;

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
