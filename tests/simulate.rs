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

// The quota extension's scenarios: keyman-aware clients, Augur's wait policy,
// the donor, accounts, clock skew and a secondary limit.

use keyman::simulate::{ClientBehaviour, Orchestrator};

/// The default scenario, shortened to four hours so that every call can be its
/// own event in a debug build.
fn default_for(hours: u32, clients: ClientBehaviour) -> SimConfig {
    SimConfig {
        duration: hours * HOUR,
        clients,
        ..SimConfig::default()
    }
}

#[test]
fn keyman_clients_get_far_fewer_403s_than_augur_clients_on_the_default_traffic() {
    let augur = simulate(&default_for(4, ClientBehaviour::Augur));
    let keyman = simulate(&default_for(4, ClientBehaviour::Keyman));
    assert_eq!(augur.demand, keyman.demand);
    assert!(
        keyman.rate_limited * 100 < augur.rate_limited,
        "keyman {} vs augur {}",
        keyman.rate_limited,
        augur.rate_limited
    );
    assert!(keyman.utilization >= 0.99, "{}", keyman.utilization);
    assert_eq!(keyman.over_quota_successes, 0);
    assert_eq!(keyman.forbidden_outside, 0);
    assert_eq!(keyman.forbidden_own, keyman.rate_limited);
    // The engine takes the clients' REPORTs (quota views): none is rejected.
    assert!(keyman.reports_sent > 0);
    assert_eq!(keyman.engine_rejected, 0);
    assert_eq!(augur.reports_sent, 0);
}

#[test]
fn augur_clients_in_a_scenario_run_call_by_call_get_the_same_figures_as_the_batched_run() {
    // Grouping each key in its own account changes nothing but makes every call
    // its own event: the figures must be the same.
    let batched = simulate(&default_for(3, ClientBehaviour::Augur));
    let per_call = simulate(&SimConfig {
        accounts: Some(20),
        ..default_for(3, ClientBehaviour::Augur)
    });
    assert_eq!(per_call.calls_served, batched.calls_served);
    assert_eq!(per_call.rate_limited, batched.rate_limited);
    assert_eq!(per_call.keys_handed_out, batched.keys_handed_out);
    assert_eq!(
        per_call.waiting_seconds_total,
        batched.waiting_seconds_total
    );
    assert_eq!(per_call.samples, batched.samples);
}

#[test]
fn with_a_floor_keyman_clients_never_go_under_it_and_get_no_403() {
    let report = simulate(&SimConfig {
        floor: Some(100),
        ..default_for(4, ClientBehaviour::Keyman)
    });
    assert_eq!(report.rate_limited, 0);
    assert_eq!(report.calls_below_floor, 0);
    assert!(report.utilization >= 0.97, "{}", report.utilization);
}

#[test]
fn a_donor_using_their_key_outside_keyman_gets_their_403s_counted_apart() {
    let config = SimConfig {
        keys: 4,
        invalid: 0,
        workers: 40,
        duration: 3 * HOUR,
        donor_calls: 600,
        ..SimConfig::default()
    };
    let augur = simulate(&config);
    assert_eq!(augur.donor_calls_made, 3 * 600);
    assert_eq!(
        augur.donor_calls_served + augur.donor_forbidden,
        augur.donor_calls_made
    );
    assert!(augur.forbidden_outside > 0, "{augur:?}");
    assert_eq!(
        augur.forbidden_own + augur.forbidden_outside,
        augur.rate_limited
    );
    assert_eq!(augur.over_quota_successes, 0);
    let keyman = simulate(&SimConfig {
        clients: ClientBehaviour::Keyman,
        ..config
    });
    // At most one outside 403 per key per window (the donor's calls are not
    // in the headers a worker saw before its next call).
    assert!(
        keyman.forbidden_outside <= 4 * 3,
        "{}",
        keyman.forbidden_outside
    );
    assert!(keyman.rate_limited < augur.rate_limited);
    assert_eq!(
        keyman.forbidden_own + keyman.forbidden_outside,
        keyman.rate_limited
    );
}

#[test]
fn a_platform_clock_30_s_off_makes_no_tight_loop_of_403s_with_keyman_clients() {
    for skew in [-30, 30] {
        let config = SimConfig {
            keys: 5,
            invalid: 0,
            workers: 50,
            duration: 3 * HOUR,
            skew_seconds: skew,
            ..SimConfig::default()
        };
        let keyman = simulate(&SimConfig {
            clients: ClientBehaviour::Keyman,
            ..config.clone()
        });
        // A handful per key and window, not one every 0.1 s.
        assert!(
            keyman.rate_limited <= 5 * 3 * 2,
            "skew {skew}: {}",
            keyman.rate_limited
        );
        assert!(keyman.utilization >= 0.99, "{}", keyman.utilization);
        assert_eq!(keyman.over_quota_successes, 0);
        if skew < 0 {
            // Augur's workers take the reset as the platform says it: the key
            // comes back 30 s early and they loop on 403s until the real reset.
            let augur = simulate(&config);
            assert!(
                augur.rate_limited > 50 * keyman.rate_limited.max(1),
                "augur {} vs keyman {}",
                augur.rate_limited,
                keyman.rate_limited
            );
        }
    }
}

#[test]
fn tokens_of_one_account_share_its_quota() {
    let config = SimConfig {
        keys: 6,
        invalid: 0,
        workers: 30,
        duration: 2 * HOUR,
        accounts: Some(2),
        ..SimConfig::default()
    };
    assert_eq!(config.capacity(), 2 * 5000 * 2);
    for clients in [ClientBehaviour::Augur, ClientBehaviour::Keyman] {
        let report = simulate(&SimConfig {
            clients,
            ..config.clone()
        });
        assert_eq!(report.calls_served, config.capacity(), "{clients:?}");
        assert_eq!(report.over_quota_successes, 0);
    }
}

#[test]
fn a_secondary_limit_answers_403_with_retry_after_and_is_counted() {
    let config = SimConfig {
        keys: 3,
        invalid: 0,
        workers: 30,
        duration: HOUR,
        max_concurrent: Some(4),
        ..SimConfig::default()
    };
    let augur = simulate(&config);
    assert!(augur.secondary_limited > 0);
    assert!(augur.forbidden_own >= augur.secondary_limited);
    assert_eq!(augur.over_quota_successes, 0);
    // keyman's leases, capped per account at the limit, keep keyman's clients
    // under it.
    let keyman = simulate(&SimConfig {
        clients: ClientBehaviour::Keyman,
        ..config
    });
    assert_eq!(keyman.secondary_limited, 0);
    assert!(keyman.utilization >= 0.99, "{}", keyman.utilization);
}

#[test]
fn augur_s_wait_policy_adds_five_seconds_to_every_hint() {
    let config = SimConfig {
        keys: 2,
        invalid: 0,
        workers: 10,
        duration: 2 * HOUR,
        quota: 1000,
        sample_every: Duration::from_secs(1),
        ..SimConfig::default()
    };
    let keyman = simulate(&config);
    let augur = simulate(&SimConfig {
        orchestrator: Orchestrator::Augur,
        ..config
    });
    assert_eq!(augur.over_quota_successes, 0);
    assert!(augur.wait_replies > 0);
    // The keys refresh at 3 601 s: keyman's hint wakes the workers then,
    // Augur's 5 s later.
    let waiting = |r: &Report, at: u64| r.samples[at as usize].workers_waiting;
    assert_eq!(waiting(&keyman, 3600), 10);
    assert_eq!(waiting(&augur, 3600), 10);
    for at in 3602..=3606 {
        assert_eq!(waiting(&keyman, at), 0, "{at}");
        assert_eq!(waiting(&augur, at), 10, "{at}");
    }
    assert_eq!(waiting(&augur, 3607), 0);
}

#[test]
fn the_json_report_names_each_figure() {
    let report = simulate(&SimConfig {
        donor_calls: 60,
        ..default_for(1, ClientBehaviour::Keyman)
    });
    let json = serde_json::to_value(&report).expect("json");
    for name in [
        "utilization",
        "calls_served",
        "rate_limited",
        "forbidden_own",
        "forbidden_outside",
        "secondary_limited",
        "calls_below_floor",
        "waiting_seconds_total",
        "waiting_seconds_per_worker",
        "donor_calls_made",
        "donor_forbidden",
        "reports_sent",
        "engine_rejected",
        "leases_granted",
        "key_run_outs",
        "holders_at_run_out_median",
    ] {
        assert!(json.get(name).is_some(), "{name} missing");
    }
    assert_eq!(json["settings"]["clients"], "keyman");
    assert_eq!(json["settings"]["orchestrator"], "keyman");
    assert_eq!(json["settings"]["donor_calls"], 60);
}
