//! `keyman simulate` with probes: the engine probes the simulated API in
//! virtual time, and Augur-style workers (who learn only from 403s and 401s)
//! notice it in the 401s and 403s they get.

use keyman::simulate::{Orchestrator, Report, SimConfig, run};
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);

fn simulate(config: &SimConfig) -> Report {
    run(config, &mut |_| {}).expect("a valid configuration")
}

fn small(probe: bool) -> SimConfig {
    SimConfig {
        keys: 6,
        invalid: 2,
        workers: 30,
        duration: 3 * HOUR,
        quota: 1000,
        probe,
        ..SimConfig::default()
    }
}

#[test]
fn with_probes_no_worker_ever_gets_a_revoked_key_and_no_quota_is_overdrawn() {
    let without = simulate(&small(false));
    let with = simulate(&small(true));
    assert_eq!(without.unauthorized, 2, "each bad key once, without probes");
    assert_eq!(with.unauthorized, 0, "never, with probes");
    assert_eq!(with.keys_invalidated, 2);
    assert!(with.probes > 0);
    assert_eq!(without.probes, 0);
    for r in [&without, &with] {
        assert_eq!(r.over_quota_successes, 0);
        assert_eq!(r.invalid_key_successes, 0);
    }
    assert!(with.settings.probe);
    // Deterministic, as every simulation.
    assert_eq!(simulate(&small(true)), with);
}

#[test]
fn behind_a_slow_platform_clock_augur_workers_are_spared_the_early_refreshes() {
    let config = |orchestrator, probe| SimConfig {
        keys: 6,
        invalid: 0,
        workers: 30,
        duration: 3 * HOUR,
        quota: 1000,
        skew_seconds: -30,
        orchestrator,
        probe,
        ..SimConfig::default()
    };
    let augur = simulate(&config(Orchestrator::Augur, false));
    let without = simulate(&config(Orchestrator::Keyman, false));
    let with = simulate(&config(Orchestrator::Keyman, true));
    println!(
        "403s with the platform 30 s behind: {} with Augur's orchestrator, {} with keyman's without probes, {} with probes",
        augur.rate_limited, without.rate_limited, with.rate_limited
    );
    // Augur's orchestrator refreshes each key 30 s before the platform's
    // reset (its header read as our time) and hands it out again after
    // every 403 meanwhile. keyman learns the lag from those 403s' EXPIREs
    // (and, probing, from the platform's `Date`) and keeps the keys until
    // the platform's reset.
    assert!(
        without.rate_limited * 5 < augur.rate_limited,
        "{} vs {}",
        without.rate_limited,
        augur.rate_limited
    );
    assert!(
        with.rate_limited * 5 < augur.rate_limited,
        "{} vs {}",
        with.rate_limited,
        augur.rate_limited
    );
    for r in [&augur, &without, &with] {
        assert_eq!(r.over_quota_successes, 0);
    }
}
