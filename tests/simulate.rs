//! `keyman simulate`: what the simulation reports about keyman's engine against a
//! GitHub-like API, checked on scenarios small enough to reason about by hand and
//! on fleets where the quota is the limit.

use keyman::simulate::{Report, SimConfig, run};
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);

fn simulate(config: &SimConfig) -> Report {
    run(config, &mut |_| {}).expect("a valid configuration")
}

/// One key, `workers` workers at one call per second, a quota of 100 per hour,
/// three hours.
fn one_key(workers: usize, floor: Option<u64>) -> SimConfig {
    SimConfig {
        keys: 1,
        invalid: 0,
        workers,
        rate: 1.0,
        duration: 3 * HOUR,
        quota: 100,
        window: HOUR,
        floor,
        ..SimConfig::default()
    }
}

#[test]
fn a_lone_worker_gets_exactly_the_quota_and_one_403_per_window() {
    let report = simulate(&one_key(1, None));
    // Each window: 100 calls served, the 101st answered 403, then a wait for the reset.
    assert_eq!(report.calls_served, 300);
    assert_eq!(report.rate_limited, 3);
    assert_eq!(report.unauthorized, 0);
    assert_eq!(report.keys_expired, 3);
    assert_eq!(report.over_quota_successes, 0);
    assert_eq!(report.utilization, 1.0);
    // Waiting: from each 403 to the next reset, about 3 500 s per window but the last.
    let waited = report.waiting_seconds_total;
    assert!(
        (2.0 * 3499.0..=2.0 * 3502.0 + 3500.0).contains(&waited),
        "{waited}"
    );
}

#[test]
fn workers_sharing_a_key_share_its_quota() {
    let report = simulate(&one_key(4, None));
    // Four workers on one key together still get the quota, and each of them
    // sees its own 403 in every window.
    assert_eq!(report.calls_served, 300);
    assert_eq!(report.rate_limited, 12);
    assert_eq!(report.over_quota_successes, 0);
}

#[test]
fn with_a_floor_a_worker_gives_the_key_up_before_its_403() {
    let report = simulate(&one_key(1, Some(10)));
    // The call that leaves 9 remaining is the last: 91 per window, no 403.
    assert_eq!(report.calls_served, 3 * 91);
    assert_eq!(report.rate_limited, 0);
    assert_eq!(report.expire_reports, 3);
}

/// More wanted calls than the quotas allow: 5 keys × 5 000 per hour against 50
/// workers at one call per second.
fn overloaded() -> SimConfig {
    SimConfig {
        keys: 5,
        invalid: 0,
        workers: 50,
        rate: 1.0,
        duration: 3 * HOUR,
        quota: 5000,
        window: HOUR,
        floor: None,
        ..SimConfig::default()
    }
}

#[test]
fn when_demand_exceeds_the_quota_nearly_all_of_it_is_used_and_never_more() {
    let report = simulate(&overloaded());
    assert!(report.demand > report.capacity);
    assert!(
        report.utilization >= 0.95,
        "utilization {}",
        report.utilization
    );
    assert!(report.calls_served <= report.capacity);
    assert_eq!(report.over_quota_successes, 0);
    assert_eq!(report.invalid_key_successes, 0);
    assert!(
        report.rate_limited > 0,
        "workers run into the quota and get 403s"
    );
    assert!(report.waiting_share > 0.5, "{}", report.waiting_share);
}

#[test]
fn many_fast_workers_on_few_keys_with_short_windows_never_exceed_a_quota() {
    let config = SimConfig {
        keys: 3,
        invalid: 0,
        workers: 120,
        rate: 7.0,
        duration: 2 * HOUR,
        quota: 1000,
        window: Duration::from_secs(600),
        floor: None,
        ..SimConfig::default()
    };
    let report = simulate(&config);
    assert_eq!(report.over_quota_successes, 0);
    assert!(
        report.utilization >= 0.95,
        "utilization {}",
        report.utilization
    );
    let with_floor = simulate(&SimConfig {
        floor: Some(10),
        ..config
    });
    assert_eq!(with_floor.over_quota_successes, 0);
    // About 40 workers share each key: once the first crosses the floor, the
    // others make more calls than the 9 left, and some run into 403s.
    assert!(with_floor.rate_limited > 0);
}

#[test]
fn an_invalid_key_is_invalidated_once_and_never_handed_out_again() {
    let report = simulate(&SimConfig {
        keys: 10,
        invalid: 1,
        workers: 30,
        duration: 2 * HOUR,
        ..SimConfig::default()
    });
    assert!(report.unauthorized >= 1);
    assert_eq!(report.keys_invalidated, 1);
    assert_eq!(report.invalid_handouts_after_invalidation, 0);
    assert_eq!(report.invalid_key_successes, 0);
    let last = report.samples.last().expect("samples");
    assert_eq!(last.invalid, 1);
}

#[test]
fn the_same_seed_gives_the_same_report_and_another_seed_another() {
    let config = SimConfig {
        keys: 8,
        workers: 60,
        duration: 2 * HOUR,
        ..SimConfig::default()
    };
    let first = simulate(&config);
    assert_eq!(simulate(&config), first);
    let other = simulate(&SimConfig {
        seed: config.seed + 1,
        ..config
    });
    assert_ne!(other, first);
}

#[test]
fn with_demand_below_the_quota_a_floor_avoids_every_403() {
    // 8 workers against 5 keys × 5 000 per hour: 28 800 wanted calls per hour
    // against 25 000 allowed. Keys shared by several workers still run out.
    let config = SimConfig {
        keys: 5,
        invalid: 0,
        workers: 8,
        duration: 4 * HOUR,
        ..SimConfig::default()
    };
    let without_floor = simulate(&config);
    assert!(without_floor.rate_limited > 0);
    let with_floor = simulate(&SimConfig {
        floor: Some(50),
        ..config
    });
    assert_eq!(with_floor.rate_limited, 0);
    assert!(with_floor.utilization >= 0.95, "{}", with_floor.utilization);
}

#[test]
fn a_light_load_is_served_in_full_without_waiting() {
    let report = simulate(&SimConfig {
        keys: 5,
        invalid: 0,
        workers: 3,
        duration: 3 * HOUR,
        ..SimConfig::default()
    });
    assert!(report.demand < report.capacity);
    assert_eq!(report.calls_served, report.demand);
    assert_eq!(report.rate_limited, 0);
    assert_eq!(report.utilization, 1.0);
}

#[test]
fn key_states_are_sampled_at_every_interval_and_add_up() {
    let config = SimConfig {
        keys: 6,
        invalid: 1,
        workers: 40,
        duration: 2 * HOUR,
        sample_every: Duration::from_secs(600),
        ..SimConfig::default()
    };
    let report = simulate(&config);
    let times: Vec<u64> = report.samples.iter().map(|s| s.at_seconds).collect();
    let expected: Vec<u64> = (0..=12).map(|i| i * 600).collect();
    assert_eq!(times, expected);
    for s in &report.samples {
        assert_eq!(s.fresh + s.expired + s.invalid, 6, "{s:?}");
        assert!(s.workers_waiting <= 40);
        assert!((0.0..=40.0).contains(&s.workers_waiting_mean));
    }
    // The fleet exhausts the keys within the first sampling interval.
    assert!(report.samples[1].expired > 0);
    // The mean waiting between samples adds up to the waiting reported (but for
    // each worker's start, within the first second).
    let charted: f64 = report.samples[1..]
        .iter()
        .map(|s| s.workers_waiting_mean * 600.0)
        .sum();
    let gap = (charted - report.waiting_seconds_total).abs();
    assert!(
        gap <= 40.0,
        "charted {charted} s, reported {} s",
        report.waiting_seconds_total
    );
}

#[test]
fn progress_goes_from_zero_to_one() {
    let mut seen = Vec::new();
    run(&one_key(1, None), &mut |done| seen.push(done)).expect("valid");
    assert_eq!(seen.first(), Some(&0.0));
    assert_eq!(seen.last(), Some(&1.0));
    assert!(seen.windows(2).all(|w| w[0] <= w[1]));
    assert!(seen.len() >= 10);
}

#[test]
fn the_report_serializes_to_json_with_its_settings() {
    let report = simulate(&one_key(1, None));
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["settings"]["quota"], 100);
    assert_eq!(json["calls_served"], 300);
    assert!(json["samples"].as_array().is_some_and(|s| !s.is_empty()));
}
