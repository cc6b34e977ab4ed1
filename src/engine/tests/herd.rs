//! No herd on one key: staggered wait hints, the key a waiter waited for,
//! and held requests (plain and leases) shared out at a refresh.

use super::*;
use crate::quota::Observation;
use std::time::Duration;

const P: &str = "p";

/// Keys `a`, `b`, `c` of `p`, rate limited until 100, 200 and 300 s.
fn three_limited(config: EngineConfig, seed: u64) -> Engine<SplitMix64> {
    let mut e = Engine::new(config, SplitMix64::new(seed));
    for (key, until) in [("a", 100), ("b", 200), ("c", 300)] {
        e.publish(t(0), P, key);
        e.expire(t(0), P, key, t(until));
    }
    e
}

/// An Augur worker's NEW (a number for `requester_id`, no `request_id`).
fn augur_new(worker: u64) -> Vec<u8> {
    format!(r#"{{"type":"NEW","key_platform":"p","requester_id":{worker}}}"#).into_bytes()
}

/// What worker `worker` is answered to a NEW at `now`.
fn ask(e: &mut Engine<SplitMix64>, now: Timestamp, worker: u64) -> Reply {
    e.handle(now, REQ, &augur_new(worker));
    let out = drain(e);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].channel, format!("worker-oath-request-{worker}"));
    reply_of(&out[0]).reply
}

#[test]
fn a_crowd_of_waiting_workers_is_told_the_refreshes_of_different_keys() {
    let mut e = three_limited(EngineConfig::default(), 1);
    let hints: Vec<Reply> = (1..=7).map(|w| ask(&mut e, t(10), w)).collect();
    // Each key takes its share (7 waiters, 3 keys: at most 3), earliest first.
    let want = [90, 190, 290, 90, 190, 290, 90].map(Reply::Wait);
    assert_eq!(hints, want);
    // Nobody is told later than a refresh, nor earlier than the first.
    assert_eq!(e.stats().waits, 7);
}

#[test]
fn a_lone_waiting_worker_is_told_the_earliest_refresh_and_keeps_its_place() {
    let mut e = three_limited(EngineConfig::default(), 1);
    // Asking again before its time (an impatient worker) does not count twice.
    for now in [10, 11, 50] {
        assert_eq!(ask(&mut e, t(now), 1), Reply::Wait(100 - now));
    }
    assert_eq!(ask(&mut e, t(50), 2), Reply::Wait(150));
}

#[test]
fn without_the_stagger_every_waiting_worker_is_told_the_earliest_refresh() {
    let config = EngineConfig {
        stagger_waits: false,
        ..EngineConfig::default()
    };
    let mut e = three_limited(config, 1);
    for w in 1..=5 {
        assert_eq!(ask(&mut e, t(10), w), Reply::Wait(90));
    }
}

#[test]
fn a_worker_back_at_its_time_gets_the_key_it_waited_for() {
    // Worker 2 waits for b (200 s). When it comes back, a is fresh too: it
    // gets b, the key no one holds, whatever the generator draws.
    for seed in 0..32 {
        let mut e = three_limited(EngineConfig::default(), seed);
        assert_eq!(ask(&mut e, t(10), 1), Reply::Wait(90));
        assert_eq!(ask(&mut e, t(10), 2), Reply::Wait(190));
        assert_eq!(ask(&mut e, t(100), 1), Reply::Key("a".into()));
        assert_eq!(
            ask(&mut e, t(200), 2),
            Reply::Key("b".into()),
            "seed {seed}"
        );
    }
    // Without the stagger the choice among a and b is uniform: some seeds
    // give a.
    let uniform = (0..32).any(|seed| {
        let config = EngineConfig {
            stagger_waits: false,
            ..EngineConfig::default()
        };
        let mut e = three_limited(config, seed);
        ask(&mut e, t(200), 2) == Reply::Key("a".into())
    });
    assert!(uniform);
}

#[test]
fn a_waiter_whose_key_is_gone_gets_what_anyone_would() {
    let mut e = three_limited(EngineConfig::default(), 3);
    assert_eq!(ask(&mut e, t(10), 1), Reply::Wait(90));
    assert_eq!(ask(&mut e, t(10), 2), Reply::Wait(190));
    // b is rate limited again before worker 2 comes back; a is fresh.
    e.expire(t(150), P, "b", t(1000));
    assert_eq!(ask(&mut e, t(200), 2), Reply::Key("a".into()));
    // Long after its time, a waiter is one like any other: a key of those
    // fresh, by the generator.
    assert!(matches!(ask(&mut e, t(320), 1), Reply::Key(_)));
}

#[test]
fn typed_assign_staggers_too_and_assign_for_keeps_one_place_per_waiter() {
    let mut e = three_limited(EngineConfig::default(), 1);
    let waiter = ReplyTo::new("task").with_request_id(1u64);
    for _ in 0..3 {
        assert_eq!(
            e.assign_for(t(10), P, &waiter),
            Assignment::Wait { refresh_at: t(100) }
        );
    }
    // Each anonymous call is one more waiter.
    assert_eq!(e.assign(t(10), P), Assignment::Wait { refresh_at: t(200) });
    assert_eq!(e.assign(t(10), P), Assignment::Wait { refresh_at: t(300) });
    // At its time the waiter gets its key.
    assert_eq!(e.assign_for(t(100), P, &waiter), Assignment::Key("a"));
}

/// A held NEW of worker `w`, held for up to an hour.
fn held_new(w: u64) -> Vec<u8> {
    format!(r#"{{"type":"NEW","key_platform":"p","requester_id":{w},"hold_ms":3600000}}"#)
        .into_bytes()
}

fn hour_holds() -> EngineConfig {
    EngineConfig {
        max_hold: Duration::from_secs(3600),
        ..EngineConfig::default()
    }
}

/// The keys handed out in `out`, in order.
fn keys_of(out: &[Transmit]) -> Vec<String> {
    out.iter()
        .map(|tx| match reply_of(tx).reply {
            Reply::Key(k) => k,
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn held_requests_released_at_a_refresh_are_spread_over_the_keys() {
    let mut e = three_limited(hour_holds(), 5);
    for w in 1..=6 {
        e.handle(t(10), REQ, &held_new(w));
    }
    assert!(drain(&mut e).is_empty());
    assert_eq!(e.held(), 6);
    // a refreshes: it takes its share (6 held, 3 keys: 2), oldest first.
    e.handle_timeout(t(100));
    let out = drain(&mut e);
    assert_eq!(keys_of(&out), ["a", "a"]);
    assert_eq!(out[0].channel, "worker-oath-request-1");
    assert_eq!(out[1].channel, "worker-oath-request-2");
    assert_eq!(e.held(), 4);
    // Nothing more until the next key comes back.
    e.handle(t(150), REQ, &augur_new(99));
    assert_eq!(drain(&mut e).len(), 1, "only worker 99's answer");
    assert_eq!(e.held(), 4);
    // b refreshes: 4 held over 3 keys, 2 for b (a has had its 2 and one more).
    e.handle_timeout(t(200));
    assert_eq!(keys_of(&drain(&mut e)), ["b", "b"]);
    // c is the last: nothing left to wait for, the rest get a key each.
    e.handle_timeout(t(300));
    assert_eq!(drain(&mut e).len(), 2);
    assert_eq!(e.held(), 0);
}

#[test]
fn a_hold_that_ends_while_keys_have_had_their_share_gets_a_key() {
    let config = EngineConfig {
        max_hold: Duration::from_secs(120),
        ..EngineConfig::default()
    };
    let mut e = three_limited(config, 5);
    for w in 1..=6 {
        e.handle(t(10), REQ, &held_new(w));
    }
    e.handle_timeout(t(100));
    assert_eq!(drain(&mut e).len(), 2);
    // The holds end at 130 s: a is fresh, so they get it rather than a wait.
    e.handle_timeout(t(130));
    assert_eq!(keys_of(&drain(&mut e)), ["a", "a", "a", "a"]);
}

#[test]
fn at_shutdown_every_held_request_that_can_get_a_key_gets_one() {
    let mut e = three_limited(hour_holds(), 5);
    for w in 1..=6 {
        e.handle(t(10), REQ, &held_new(w));
    }
    e.handle_timeout(t(100));
    assert_eq!(drain(&mut e).len(), 2);
    e.shutdown(t(101));
    assert_eq!(keys_of(&drain(&mut e)), ["a", "a", "a", "a"]);
}

/// Key `a` of `p` whose quota of 30 calls is spent until 100 s (it is
/// withheld until then) and known to come back whole.
fn spent_key() -> Engine<SplitMix64> {
    let mut e = Engine::new(hour_holds(), SplitMix64::new(9));
    e.publish(t(0), P, "a");
    let spent = Observation {
        remaining: Some(0),
        limit: Some(30),
        reset: Some(t(100)),
        ..Observation::default()
    };
    e.report(t(1), P, "a", &spent, None);
    e
}

fn lease_new(w: u64, want: u64, hold_ms: Option<u64>) -> Vec<u8> {
    let hold = hold_ms.map_or(String::new(), |ms| format!(r#","hold_ms":{ms}"#));
    format!(r#"{{"type":"NEW","key_platform":"p","requester_id":{w},"lease":{want}{hold}}}"#)
        .into_bytes()
}

#[test]
fn a_lease_request_with_a_hold_is_held_and_released_with_a_lease() {
    let mut e = spent_key();
    // Without a hold: a wait at once.
    e.handle(t(10), REQ, &lease_new(1, 10, None));
    assert_eq!(reply_of(&drain(&mut e)[0]).reply, Reply::Wait(90));
    // With one: held, then a lease at the reset.
    e.handle(t(10), REQ, &lease_new(2, 10, Some(3_600_000)));
    assert!(drain(&mut e).is_empty());
    assert_eq!(e.held(), 1);
    e.handle_timeout(t(100));
    let out = drain(&mut e);
    assert_eq!(out[0].channel, "worker-oath-request-2");
    match reply_of(&out[0]).reply {
        Reply::Lease { key, calls, .. } => assert_eq!((key.as_str(), calls), ("a", 10)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn held_lease_requests_share_the_quota_of_the_key_that_refreshes() {
    let mut e = spent_key();
    for w in 1..=5 {
        e.handle(t(10), REQ, &lease_new(w, 100, Some(3_600_000)));
    }
    assert_eq!(e.held(), 5);
    e.handle_timeout(t(100));
    let calls: Vec<u64> = drain(&mut e)
        .iter()
        .map(|tx| match reply_of(tx).reply {
            Reply::Lease { calls, .. } => calls,
            other => panic!("{other:?}"),
        })
        .collect();
    // 30 calls for 5 requests: 6 each, not 30 for the first and a wait for
    // the others.
    assert_eq!(calls, [6, 6, 6, 6, 6]);
    assert_eq!(e.held(), 0);
    assert_eq!(e.quotas().available(t(100), P, "a", 0), Some(0));
}
