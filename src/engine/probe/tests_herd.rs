//! Probes and the staggered waits of Augur's workers: a probe that finds an
//! expired key's window spent keeps the key until the reset its workers read,
//! not up to a second later (the engine's reading of the platform's clock is
//! whole seconds): the workers told to come back at that reset find their key
//! fresh, instead of being handed, all at once, whatever other key is.

use crate::engine::{Engine, EngineConfig};
use crate::harness::{Driver, START_MILLIS};
use crate::pool::KeyState;
use crate::probe::{ProbeAnswer, ProbeConfig, ProbeFacts, ProbeOutcome, ResourceQuota};
use crate::protocol::Reply;
use crate::rng::SplitMix64;
use crate::time::Timestamp;
use std::collections::{BTreeMap, BTreeSet};

const ANN: &str = "augur-oauth-announce";
const REQ: &str = "worker-oath-request";
const A: &str = "ghp_herdTokenAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const B: &str = "ghp_herdTokenBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

/// `millis` after the start, on our clock (and the platform's: no skew).
fn at(millis: u64) -> Timestamp {
    Timestamp::from_millis(START_MILLIS + millis)
}

/// The platform: each key's remaining calls and reset, in seconds after the
/// start.
type World = BTreeMap<&'static str, (u64, u64)>;

/// Fires the engine's timers up to `to`; each probe given out on the way is
/// answered at the next tenth-to-the-second (x.9 s: a `Date` of x s, so the
/// engine's reading of the platform's clock errs late by most of a second),
/// as `/rate_limit` would answer from `world`. Returns the keys probed.
fn run_to(d: &mut Driver, world: &World, to: Timestamp) -> Vec<String> {
    let mut probed = Vec::new();
    loop {
        match d.engine.poll_timeout() {
            Some(t) if t <= to => {
                d.step().unwrap();
            }
            _ => {
                d.set_time(d.now().max(to));
                return probed;
            }
        }
        let probes = d.take_probes();
        if probes.is_empty() {
            continue;
        }
        let now = d.now().as_millis();
        let mut answered = now / 1000 * 1000 + 900;
        if answered < now {
            answered += 1000;
        }
        d.set_time(Timestamp::from_millis(answered));
        for p in probes {
            probed.push(p.key.clone());
            let (remaining, reset) = world[p.key.as_str()];
            let facts = ProbeFacts {
                server_date: Some(Timestamp::from_secs(answered / 1000)),
                resources: vec![ResourceQuota {
                    resource: "core".into(),
                    limit: Some(5000),
                    remaining: Some(remaining),
                    reset: Some(Timestamp::from_secs(START_MILLIS / 1000 + reset)),
                }],
                account: None,
                expires_at: None,
            };
            let outcome = ProbeOutcome::Valid(facts);
            d.answer_probe(ProbeAnswer { id: p.id, outcome }).unwrap();
        }
    }
}

/// What Augur worker `worker` is answered to a NEW at the driver's time.
fn ask(d: &mut Driver, worker: u64) -> Reply {
    let new =
        format!(r#"{{"type": "NEW", "key_platform": "github_rest", "requester_id": {worker}}}"#);
    d.handle(REQ, new.as_bytes()).unwrap();
    let replies = d.take_replies(&format!("{REQ}-{worker}"));
    Reply::decode(replies.last().expect("an answer"), usize::MAX)
        .unwrap()
        .reply
}

#[test]
fn waiters_told_a_reset_that_a_probe_then_moved_later_wait_for_their_key() {
    for seed in 0..8 {
        let engine = Engine::new(
            EngineConfig {
                probe: Some(ProbeConfig::default()),
                ..EngineConfig::default()
            },
            SplitMix64::new(seed),
        );
        let mut d = Driver::with_engine(engine, at(0)).checked(true);
        let mut world = World::from([(A, (5000, 1200)), (B, (5000, 1195))]);
        for key in [A, B] {
            let publish = format!(
                r#"{{"type": "PUBLISH", "key_str": "{key}", "key_platform": "github_rest"}}"#
            );
            d.handle(ANN, publish.as_bytes()).unwrap();
        }
        run_to(&mut d, &world, at(10_000));
        // Workers ran both keys out: their 403s said A resets at 1 200 s, B
        // at 1 195 s, and they sent EXPIRE with those headers as read.
        world.insert(A, (0, 1200));
        world.insert(B, (0, 1195));
        for (key, reset) in [(A, 1200), (B, 1195)] {
            let expire = format!(
                r#"{{"type": "EXPIRE", "key_str": "{key}", "key_platform": "github_rest", "refresh_time": {}, "requester_id": 9}}"#,
                START_MILLIS / 1000 + reset
            );
            d.handle(REQ, expire.as_bytes()).unwrap();
        }
        // Four workers find no key and are told the two refreshes, two each.
        run_to(&mut d, &world, at(20_300));
        let hints: Vec<Reply> = (1..=4).map(|w| ask(&mut d, w)).collect();
        assert_eq!(hints, [1175, 1180, 1175, 1180].map(Reply::Wait));
        // The idle probes find both windows spent, as the workers said; the
        // engine's reading of the platform's clock is off by under a second
        // (whole-second dates): the keys stay rate limited until the resets
        // the workers were told, not a fraction of a second later.
        run_to(&mut d, &world, at(1_194_000));
        let now = d.now();
        let refresh = |key| match d.engine.pool.state("github_rest", key, now) {
            Some(KeyState::Expired { refresh_at }) => refresh_at.as_millis() - START_MILLIS,
            other => panic!("{other:?}"),
        };
        assert_eq!((refresh(A), refresh(B)), (1_200_000, 1_195_000));
        // Each worker comes back at the time it was told, and again after
        // any further wait, until it has a key.
        let mut got: BTreeMap<u64, Reply> = BTreeMap::new();
        let mut due: BTreeSet<(u64, u64)> = BTreeSet::from([
            (1_195_300, 1),
            (1_200_300, 2),
            (1_195_300, 3),
            (1_200_300, 4),
        ]);
        while let Some((time, w)) = due.pop_first() {
            run_to(&mut d, &world, at(time));
            match ask(&mut d, w) {
                Reply::Wait(n) => {
                    due.insert((time + n * 1000, w));
                }
                reply => {
                    got.insert(w, reply);
                }
            }
        }
        // Each key goes to the two workers told to wait for it: none of A's
        // waiters, back before A's refresh, took B while B's were on it.
        let want = BTreeMap::from([
            (1, Reply::Key(B.into())),
            (2, Reply::Key(A.into())),
            (3, Reply::Key(B.into())),
            (4, Reply::Key(A.into())),
        ]);
        assert_eq!(got, want, "seed {seed}");
        // Handed out to the workers that waited for them, both keys are in
        // use: probed again within the in-use interval (60 s) of their last
        // probe, not the idle one (15 minutes).
        let probed = run_to(&mut d, &world, at(1_200_300 + 70_000));
        for key in [A, B] {
            assert!(
                probed.iter().any(|k| k == key),
                "seed {seed}: {key} not probed as a key in use: {probed:?}"
            );
        }
    }
}
