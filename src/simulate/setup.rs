//! Setting a simulation up: the engine's configuration for the orchestrator
//! simulated, the keys, the workers and the first actions.

use super::api::{Api, ApiKey};
use super::config::{Orchestrator, PLATFORM, START, SimConfig, millis};
use super::report::Settings;
use super::run::{Action, Simulation, below};
use super::workers::{KeySide, LEASE_SPAN, WorkerState};
use crate::engine::{Engine, EngineConfig};
use crate::probe::ProbeConfig;
use crate::protocol::{Announce, Channels};
use crate::rng::SplitMix64;
use crate::time::Timestamp;
use rand_core::Rng;
use std::collections::{BinaryHeap, HashMap};

/// How long before the workers start the keys are published.
const PUBLISH_LEAD: std::time::Duration = std::time::Duration::from_secs(10);

/// The engine's configuration: keyman's with the simulation's strategy,
/// stagger, floor and lease cap, or for the model of Augur's orchestrator,
/// uniform choice, every wait hint for the earliest refresh, an EXPIRE whose
/// reset has passed ignored, and none of the quota extension.
fn engine_config(config: &SimConfig) -> EngineConfig {
    let keyman = config.orchestrator == Orchestrator::Keyman;
    if !keyman {
        // Augur's orchestrator: no holds, no leases (a NEW with `lease` gets a
        // plain key), no floors.
        let mut engine = EngineConfig {
            stagger_waits: false,
            max_held: 0,
            learn_lag: false,
            ..EngineConfig::default()
        };
        engine.quota.max_leases = 0;
        return engine;
    }
    let mut engine = EngineConfig {
        stagger_waits: config.stagger_waits,
        selection: config.selection,
        probe: config.probe.then(ProbeConfig::default),
        ..EngineConfig::default()
    };
    if let Some(floor) = config.floor {
        engine.quota.floors.insert(PLATFORM.to_string(), floor);
    }
    // The operator caps the leases per account at the platform's secondary
    // limit on calls in flight (a lease is one worker calling in turn).
    if let Some(max) = config.max_concurrent {
        engine.quota.max_leases = usize::try_from(max).unwrap_or(usize::MAX);
    }
    engine
}

/// Characters of the simulated keys.
const KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A random key text, shaped like a GitHub token.
fn random_key(rng: &mut SplitMix64) -> String {
    let mut key = String::from("ghp_");
    for _ in 0..36 {
        let idx = ((u128::from(rng.next_u64()) * KEY_ALPHABET.len() as u128) >> 64) as usize;
        key.push(char::from(KEY_ALPHABET[idx]));
    }
    key
}

impl Simulation {
    pub(super) fn new(config: &SimConfig, batching: bool) -> Self {
        let start = START.as_millis();
        let interval = config.call_interval_ms();
        let end = start.saturating_add(millis(config.duration));
        let mut rng = SplitMix64::new(config.seed ^ 0x5157_4f52_4b45_5253);

        // Keys: random texts, some of them bad.
        let mut key_text = Vec::with_capacity(config.keys);
        let mut key_index = HashMap::with_capacity(config.keys);
        while key_text.len() < config.keys {
            let key = random_key(&mut rng);
            if !key_index.contains_key(&key) {
                key_index.insert(key.clone(), key_text.len());
                key_text.push(key);
            }
        }
        let mut order: Vec<usize> = (0..config.keys).collect();
        for i in 0..config.invalid.min(config.keys) {
            let j = i + below(&mut rng, (config.keys - i) as u64) as usize;
            order.swap(i, j);
        }
        let mut api_keys: Vec<ApiKey> = (0..config.keys)
            .map(|k| ApiKey {
                valid: true,
                account: config.account_of(k),
            })
            .collect();
        for &bad in &order[..config.invalid.min(config.keys)] {
            api_keys[bad].valid = false;
        }
        let donor = api_keys
            .iter()
            .position(|k| k.valid)
            .filter(|_| config.donor_calls > 0)
            .map(|key| (key, (3_600_000 / config.donor_calls.max(1)).max(1)));
        let accounts = config.accounts.unwrap_or(config.keys).min(config.keys);
        let mut api = Api::new(api_keys, accounts, config.quota, millis(config.window));
        api.max_concurrent = config.max_concurrent;
        api.flight_ms = interval;
        api.skew_ms = config.skew_seconds.saturating_mul(1000);

        let mut sim = Self {
            settings: Settings::from(config),
            batching,
            interval,
            floor: config.floor.unwrap_or(0),
            end,
            sample_every: millis(config.sample_every).max(1),
            engine: Engine::new(engine_config(config), SplitMix64::new(config.seed)),
            channels: Channels::default(),
            api,
            key_text,
            key_index,
            keys: vec![KeySide::default(); config.keys],
            workers: Vec::with_capacity(config.workers),
            workers_waiting: 0,
            waiting_area: 0,
            waiting_counted_to: start,
            last_sample: None,
            queue: BinaryHeap::new(),
            engine_wake: None,
            worker_time: 0,
            demand: 0,
            capacity: config.capacity(),
            waiting_total: 0,
            calls_served: 0,
            rate_limited: 0,
            unauthorized: 0,
            keys_handed_out: 0,
            wait_replies: 0,
            error_replies: 0,
            expire_reports: 0,
            invalidate_reports: 0,
            keys_expired: 0,
            keys_invalidated: 0,
            invalid_handouts: 0,
            samples: Vec::new(),
            clients: config.clients,
            orchestrator: config.orchestrator,
            seen: vec![None; config.workers],
            donor,
            forbidden_own: 0,
            forbidden_outside: 0,
            secondary_limited: 0,
            calls_below_floor: 0,
            donor_calls_made: 0,
            donor_calls_served: 0,
            donor_forbidden: 0,
            reports_sent: 0,
            engine_rejected: 0,
            ran_out: vec![None; config.keys],
            holders_at_run_out: Vec::new(),
            leases: vec![None; config.workers],
            mailbox: vec![None; config.workers],
            returning: vec![None; config.workers],
            lease_size: (millis(LEASE_SPAN) / interval).max(1),
            leases_granted: 0,
            returns: 0,
            probes: 0,
        };

        sim.push(end, Action::End);
        // The keys are published before the workers start, as Augur publishes
        // its keys at start before its workers ask (with probes, their first
        // probes are answered by then).
        let published = start.saturating_sub(millis(PUBLISH_LEAD));
        // The admin of keyman's orchestrator names the account of each key
        // when keys share one (Augur's orchestrator has no accounts).
        let named = config.accounts.is_some() && config.orchestrator == Orchestrator::Keyman;
        for i in 0..config.keys {
            let key = sim.key_text[i].clone();
            let platform = PLATFORM.to_string();
            let msg = if named {
                Announce::PublishWithQuota {
                    key,
                    platform,
                    account: Some(format!("account-{}", config.account_of(i))),
                    limit: None,
                }
            } else {
                Announce::Publish { key, platform }
            };
            sim.engine.handle(
                Timestamp::from_millis(published),
                &sim.channels.announce,
                &msg.encode(),
            );
            sim.drain_engine(published, None);
        }
        // Workers start one after another: within the first call interval, or
        // spread over the ramp-up.
        let ramp = u128::from(millis(config.ramp_up));
        for w in 0..config.workers {
            let offset = (ramp * w as u128 / config.workers as u128) as u64;
            let first = start + offset + below(&mut rng, interval);
            sim.workers.push(WorkerState::Waiting { since: first });
            sim.workers_waiting += 1;
            sim.worker_time += end.saturating_sub(first);
            sim.demand += end.saturating_sub(first).div_ceil(interval);
            sim.push(first, Action::Ask { worker: w });
        }
        if let Some((key, every)) = sim.donor {
            sim.push(start + every / 2, Action::Donor { key });
        }
        let mut at = start;
        while at < end {
            sim.push(at, Action::Sample);
            at = at.saturating_add(sim.sample_every);
        }
        sim
    }
}
