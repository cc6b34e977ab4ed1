//! Cost of the pure core per operation: [`KeyPool`] with 10, 1 000 and 100 000
//! keys in one platform, 10 % or 90 % of them expired, and the [`Engine`] turning
//! one NEW message into its reply.
//!
//! Run: `cargo bench --bench pool`. The expired keys refresh an hour later, so
//! the fresh/expired split holds for the whole measurement. Samples are of 1 000
//! operations: with fewer, the first touches of a 100 000-key pool's memory after
//! each pause of the harness dominate and the figures are not steady-state ones.

use divan::counter::ItemsCount;
use divan::{Bencher, black_box};
use keyman::{Assignment, Engine, EngineConfig, KeyPool, SplitMix64, Timestamp};

fn main() {
    divan::main();
}

const PLATFORM: &str = "github_rest";
const SIZES: &[usize] = &[10, 1_000, 100_000];
const NOW: Timestamp = Timestamp::from_secs(1_700_000_000);
const HOUR_LATER: Timestamp = Timestamp::from_secs(1_700_003_600);

/// `n` distinct keys shaped like GitHub tokens (40 characters).
fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("ghp_{i:036}")).collect()
}

/// A pool with `keys` in one platform, the first `expired_pct` % of them
/// expired for an hour, the rest fresh; warmed up by a few draws per key, as a
/// busy orchestrator's pool is, so that the figures are steady-state ones.
fn pool_with(keys: &[String], expired_pct: usize) -> KeyPool {
    let mut pool = KeyPool::new();
    for k in keys {
        pool.publish(PLATFORM, k);
    }
    for k in &keys[..keys.len() * expired_pct / 100] {
        pool.expire(PLATFORM, k, HOUR_LATER, NOW);
    }
    let mut rng = SplitMix64::new(0);
    for _ in 0..keys.len().max(1000) * 4 {
        black_box(pool.assign(PLATFORM, NOW, &mut rng));
    }
    for k in keys {
        black_box(pool.state(PLATFORM, k, NOW));
    }
    pool
}

/// One NEW decision: refresh check, then a uniform draw among the fresh keys.
#[divan::bench(consts = [10, 90], args = SIZES, sample_size = 1000, sample_count = 200)]
fn assign<const EXPIRED_PCT: usize>(bencher: Bencher, n: usize) {
    let keys = keys(n);
    let mut pool = pool_with(&keys, EXPIRED_PCT);
    let mut rng = SplitMix64::new(1);
    bencher.counter(ItemsCount::new(1usize)).bench_local(|| {
        if let Assignment::Key(k) = pool.assign(PLATFORM, NOW, &mut rng) {
            black_box(k);
        }
    });
}

/// One rate-limit round trip of a key: a fresh key is expired until the next
/// millisecond, the clock moves on, and the platform's next assignment
/// refreshes it (and hands out a key).
#[divan::bench(consts = [10, 90], args = SIZES, sample_size = 1000, sample_count = 200)]
fn expire_refresh_assign<const EXPIRED_PCT: usize>(bencher: Bencher, n: usize) {
    let keys = keys(n);
    let mut pool = pool_with(&keys, EXPIRED_PCT);
    let fresh = &keys[n * EXPIRED_PCT / 100..];
    let mut rng = SplitMix64::new(2);
    let mut now = NOW.as_millis();
    let mut i = 0;
    bencher.counter(ItemsCount::new(1usize)).bench_local(|| {
        let key = &fresh[i % fresh.len()];
        i += 1;
        pool.expire(
            PLATFORM,
            key,
            Timestamp::from_millis(now + 1),
            Timestamp::from_millis(now),
        );
        now += 1;
        if let Assignment::Key(k) = pool.assign(PLATFORM, Timestamp::from_millis(now), &mut rng) {
            black_box(k);
        }
    });
}

/// One NEW message through the Engine: decode the JSON, assign, encode the
/// reply, and take it from the outbox.
#[divan::bench(args = SIZES, sample_size = 1000, sample_count = 200)]
fn engine_new(bencher: Bencher, n: usize) {
    let keys = keys(n);
    let mut engine = Engine::with_pool(
        pool_with(&keys, 10),
        EngineConfig::default(),
        SplitMix64::new(3),
    );
    let channel = engine.config().channels.request.clone();
    let payload = br#"{"key_platform": "github_rest", "type": "NEW", "requester_id": 4711}"#;
    bencher.counter(ItemsCount::new(1usize)).bench_local(|| {
        engine.handle(NOW, &channel, payload);
        black_box(engine.poll_transmit())
    });
}

/// A held NEW sent again (same requester and request id) while `n` requests
/// are held: the held requests are indexed, so it should cost the same for any
/// `n` (a scan of the held queue would grow with it).
#[divan::bench(args = [1_000, 32_000], sample_size = 100, sample_count = 100)]
fn engine_resend_held(bencher: Bencher, n: usize) {
    let config = EngineConfig {
        max_held: n,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(config, SplitMix64::new(4));
    let channels = engine.config().channels.clone();
    engine.handle(
        NOW,
        &channels.announce,
        br#"{"type": "PUBLISH", "key_str": "ghp_only", "key_platform": "github_rest"}"#,
    );
    let refresh = NOW.as_secs() + 3600;
    let expire = format!(
        r#"{{"type": "EXPIRE", "key_str": "ghp_only", "key_platform": "github_rest", "refresh_time": {refresh}}}"#
    );
    engine.handle(NOW, &channels.request, expire.as_bytes());
    let new = |i: usize| {
        format!(
            r#"{{"type": "NEW", "key_platform": "github_rest", "requester_id": "w{i}", "request_id": "r", "hold_ms": 600000}}"#
        )
        .into_bytes()
    };
    for i in 0..n {
        engine.handle(NOW, &channels.request, &new(i));
    }
    assert_eq!(engine.held(), n);
    // The last held are the ones a scan from the front would reach last.
    let last = new(n - 1);
    bencher.counter(ItemsCount::new(1usize)).bench_local(|| {
        engine.handle(NOW, &channels.request, &last);
        black_box(engine.held())
    });
}
