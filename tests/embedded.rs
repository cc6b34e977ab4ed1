//! The embedded pool: the behaviours every key source shares, plus what only an
//! in-process pool offers (plain threads, an injected clock, shutdown).

#![cfg(feature = "tokio")]

mod support;

use keyman::service::embedded::EmbeddedPool;
use keyman::service::{KeyAdmin, KeySource};
use keyman::{Clock, KeyError, ManualClock, Timestamp};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::behaviour::{Admin, Source};

async fn setup() -> (Source, Admin) {
    let pool = EmbeddedPool::builder()
        .with_deadline(Duration::from_secs(10))
        .with_seed(7)
        .build();
    (Arc::new(pool.clone()), Arc::new(pool))
}

support::behaviour::behaviour_tests!(setup);

#[test]
fn blocking_handles_serve_many_plain_threads() {
    let pool = EmbeddedPool::builder().with_seed(1).build().blocking();
    let keys = ["tok_a", "tok_b", "tok_c", "tok_bad"];
    for k in keys {
        pool.publish("github_rest", k).unwrap();
    }
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let mut key = pool.request("github_rest").unwrap();
                for _ in 0..200 {
                    if key == "tok_bad" {
                        key = pool.invalidate("github_rest", &key).unwrap();
                    } else {
                        key = pool.request("github_rest").unwrap();
                    }
                }
                // One thread rate-limits a key for an hour; the others go on.
                if i == 0 && key != "tok_bad" {
                    let reset =
                        keyman::service::wall_clock().saturating_add(Duration::from_secs(3600));
                    let next = pool.expire("github_rest", &key, reset).unwrap();
                    assert_ne!(next, key);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a worker thread panicked");
    }
    assert_eq!(pool.invalid_keys("github_rest"), Ok(vec!["tok_bad".into()]));
    let status = pool.status().unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].invalid, 1);
    assert_eq!(status[0].fresh + status[0].expired, 3);
}

#[test]
fn a_blocked_thread_is_woken_by_a_publish_from_another_thread() {
    let pool = EmbeddedPool::new().blocking();
    pool.publish("p", "tok_a").unwrap();
    let reset = keyman::service::wall_clock().saturating_add(Duration::from_secs(60));
    // The only key is rate limited: expiring it waits, so report it from a thread
    // with a short deadline of its own.
    let limiter = pool.clone();
    let expired = std::thread::spawn(move || limiter.expire("p", "tok_a", reset).map(drop).err());
    // Ask only once the key is known to be rate limited, so the request blocks.
    while pool
        .status()
        .unwrap()
        .first()
        .is_none_or(|s| s.expired == 0)
    {
        std::thread::yield_now();
    }
    let started = Instant::now();
    let waiter = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.request_within("p", Duration::from_secs(20)))
    };
    // Nothing observable says the thread is blocked yet; give it a moment.
    std::thread::sleep(Duration::from_millis(100));
    pool.publish("p", "tok_b").unwrap();
    assert_eq!(waiter.join().unwrap(), Ok("tok_b".to_string()));
    assert!(started.elapsed() < Duration::from_secs(5));
    // The expiring thread also got a key once tok_b arrived.
    assert_eq!(expired.join().unwrap(), None);
}

#[test]
fn a_blocking_request_times_out_at_its_deadline() {
    let pool = EmbeddedPool::new().blocking();
    pool.publish("p", "tok_a").unwrap();
    let pool_async = pool.as_async();
    let reset = keyman::service::wall_clock().saturating_add(Duration::from_secs(60));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    // Rate-limit the only key and cut the wait for the next one short.
    let cut = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_millis(50),
            pool_async.expire("p", "tok_a", reset),
        )
        .await
    });
    assert!(cut.is_err());
    let deadline = Duration::from_millis(300);
    let started = Instant::now();
    assert_eq!(
        pool.request_within("p", deadline),
        Err(KeyError::Timeout(deadline))
    );
    let took = started.elapsed();
    assert!(
        took >= deadline && took < deadline + Duration::from_millis(500),
        "{took:?}"
    );
}

#[tokio::test]
async fn with_a_manual_clock_a_waiting_request_gets_the_key_when_the_clock_reaches_its_reset() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_000_000)));
    let pool = EmbeddedPool::builder()
        .with_clock(clock.clone())
        .with_deadline(Duration::from_secs(20))
        .build();
    pool.publish("p", "tok_a").await.unwrap();
    let reset = clock.now().saturating_add(Duration::from_secs(3600));
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.expire("p", "tok_a", reset).await })
    };
    // The key stays rate limited while the clock stands still.
    while pool.status().await.unwrap()[0].expired == 0 {
        tokio::task::yield_now().await;
    }
    assert!(!waiting.is_finished());
    let started = Instant::now();
    clock.advance(Duration::from_secs(3600));
    pool.wake_waiters();
    assert_eq!(waiting.await.unwrap(), Ok("tok_a".to_string()));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn shutdown_ends_waiting_requests_and_refuses_later_calls() {
    let pool = EmbeddedPool::builder()
        .with_deadline(Duration::from_secs(20))
        .build();
    pool.publish("p", "tok_a").await.unwrap();
    let reset = keyman::service::wall_clock().saturating_add(Duration::from_secs(60));
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.expire("p", "tok_a", reset).await })
    };
    while pool.status().await.unwrap()[0].expired == 0 {
        tokio::task::yield_now().await;
    }
    let started = Instant::now();
    pool.shutdown().await.unwrap();
    assert_eq!(waiting.await.unwrap(), Err(KeyError::ShutDown));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(pool.request("p").await, Err(KeyError::ShutDown));
    assert_eq!(pool.publish("p", "tok_b").await, Err(KeyError::ShutDown));
    assert_eq!(pool.ping().await, Err(KeyError::ShutDown));
    assert_eq!(pool.blocking().request("p"), Err(KeyError::ShutDown));
    assert_eq!(pool.shutdown().await, Ok(()));
}

#[tokio::test]
async fn a_publish_the_pool_refuses_is_an_error_and_adds_nothing() {
    let pool = EmbeddedPool::new();
    let long_key = "k".repeat(keyman::protocol::MAX_KEY_LEN + 1);
    let refused = pool.publish("p", &long_key).await;
    assert!(
        matches!(&refused, Err(KeyError::Rejected(reason)) if reason.contains("key_str")),
        "a key longer than the limit: {refused:?}"
    );
    let long_platform = "p".repeat(keyman::protocol::MAX_PLATFORM_LEN + 1);
    let refused = pool
        .publish_account(&long_platform, "tok_a", Some("acct"), None)
        .await;
    assert!(
        matches!(&refused, Err(KeyError::Rejected(reason)) if reason.contains("key_platform")),
        "a platform name longer than the limit: {refused:?}"
    );
    assert_eq!(pool.platforms().await, Ok(vec![]));
    pool.publish("p", "tok_a")
        .await
        .expect("a key within the limits");
    assert_eq!(pool.keys("p").await, Ok(vec!["tok_a".to_owned()]));
}

#[tokio::test]
async fn the_same_seed_hands_out_the_same_sequence_of_keys() {
    let draw = |seed| async move {
        let pool = EmbeddedPool::builder().with_seed(seed).build();
        for i in 0..10 {
            pool.publish("p", &format!("tok_{i}")).await.unwrap();
        }
        let mut got = Vec::new();
        for _ in 0..30 {
            got.push(pool.request("p").await.unwrap());
        }
        got
    };
    assert_eq!(draw(5).await, draw(5).await);
    assert_ne!(draw(5).await, draw(6).await);
}

#[test]
fn debug_output_shows_no_key() {
    let pool = EmbeddedPool::new();
    pool.blocking().publish("p", "tok_secret_value").unwrap();
    assert!(!format!("{pool:?} {:?}", pool.blocking()).contains("secret"));
}
