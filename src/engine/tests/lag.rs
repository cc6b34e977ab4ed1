//! A platform whose clock is behind ours, as Augur's workers show it: they
//! report the reset time of each 403 as the platform gives it.

use super::*;
use std::time::Duration;

fn ms(millis: u64) -> Timestamp {
    Timestamp::from_millis(millis)
}

/// Two keys; `k1` spent until the platform's reset at 100 s on its clock,
/// which is 130 s on ours. Each time `k1` is fresh again by our clock before
/// 130 s, its holder gets a 403 and reports the same reset: how many such
/// 403s there are before the platform resets, and whether `k1` was handed
/// out at a time the platform still refused it.
fn rounds_until_the_platform_resets(config: EngineConfig) -> (u32, Engine<SplitMix64>) {
    let mut e = Engine::new(config, SplitMix64::new(1));
    e.publish(t(0), "p", "k1");
    e.publish(t(0), "p", "k2");
    e.expire(t(50), "p", "k1", t(100));
    let mut refused = 0;
    // Every 100 ms up to the platform's reset: is k1 fresh by our clock?
    for now in (100_000..130_000).step_by(100).map(ms) {
        if e.pool().state("p", "k1", now) == Some(KeyState::Fresh) {
            refused += 1;
            e.expire(now, "p", "k1", t(100));
        }
    }
    (refused, e)
}

#[test]
fn a_key_refused_after_its_reset_by_our_clock_waits_for_the_platform_s_reset() {
    let (refused, mut e) = rounds_until_the_platform_resets(EngineConfig::default());
    // One 403 at 100 s (held 1 s), then one each time the hold ends and
    // doubles: 101, 102, 104, 108, 116; 132 is past the platform's reset.
    assert_eq!(refused, 6, "403s before the platform reset");
    // The log says so each time the lag taken grew: 2 s (from the 403 at
    // 101 s) to 32 s.
    let lags: Vec<Duration> = std::iter::from_fn(|| e.poll_event())
        .filter_map(|ev| match ev {
            Event::ClockLag { platform, lag } if platform == "p" => Some(lag),
            _ => None,
        })
        .collect();
    assert_eq!(
        lags,
        [2, 4, 8, 16, 32].map(Duration::from_secs).to_vec(),
        "the lags logged"
    );
    // STATUS tells it too.
    assert_eq!(e.status(ms(125_000))[0].clock_lag_ms, Some(32_000));
    // Meanwhile every NEW got the other key.
    assert!(matches!(e.assign(ms(125_000), "p"), Assignment::Key("k2")));
    // The next window: the reset the worker reports is moved by the lag
    // learnt, so k1 is not fresh again before the platform's reset (3 730 s).
    e.expire(t(3_000), "p", "k1", t(3_700));
    assert!(matches!(
        e.pool().state("p", "k1", t(3_730)),
        Some(KeyState::Expired { .. })
    ));
    assert_eq!(e.pool().state("p", "k1", t(3_760)), Some(KeyState::Fresh));
}

#[test]
fn without_learning_the_lag_the_refused_key_loops_as_in_augur() {
    let config = EngineConfig {
        learn_lag: false,
        ..EngineConfig::default()
    };
    let (refused, _) = rounds_until_the_platform_resets(config);
    // A 403 every time it is looked at, 100 ms apart, for 30 s.
    assert_eq!(refused, 300);
}

#[test]
fn a_reset_long_past_changes_nothing() {
    let mut e = engine();
    e.publish(t(0), "p", "k1");
    let now = t(10_000);
    assert_eq!(e.expire(now, "p", "k1", t(100)), Expired::Unchanged);
    assert_eq!(e.pool().state("p", "k1", now), Some(KeyState::Fresh));
    // And teaches nothing: a later EXPIRE is taken as it is.
    e.expire(now, "p", "k1", t(10_060));
    assert_eq!(
        e.pool().state("p", "k1", now),
        Some(KeyState::Expired {
            refresh_at: t(10_060)
        })
    );
}
