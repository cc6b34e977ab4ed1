//! `observe` on the embedded pool, with an injected clock.

use super::*;

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
