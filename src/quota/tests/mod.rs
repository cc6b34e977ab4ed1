use super::*;
use crate::engine::{Engine, EngineConfig, Leased, Transmit};
use crate::pool::Selection;
use crate::protocol::{
    Announce, DEFAULT_MAX_PAYLOAD, Reply, ReplyMessage, Request, decode_announce, decode_request,
};
use crate::rng::SplitMix64;
use crate::{Assignment, KeyState};

const REQ: &str = "worker-oath-request";
const ANN: &str = "augur-oauth-announce";
const P: &str = "github_rest";

fn t(secs: u64) -> Timestamp {
    Timestamp::from_secs(secs)
}

fn obs(remaining: u64, reset: u64) -> Observation {
    Observation {
        remaining: Some(remaining),
        limit: Some(5000),
        reset: Some(t(reset)),
        ..Observation::default()
    }
}

fn dated(remaining: u64, reset: u64, date: u64) -> Observation {
    Observation {
        server_date: Some(t(date)),
        ..obs(remaining, reset)
    }
}

fn engine_with(config: EngineConfig) -> Engine<SplitMix64> {
    Engine::new(config, SplitMix64::new(7))
}

fn floored(floor: u64) -> EngineConfig {
    let mut c = EngineConfig::default();
    c.quota.floors.insert(P.into(), floor);
    c
}

fn drain(e: &mut Engine<SplitMix64>) -> Vec<Transmit> {
    std::iter::from_fn(|| e.poll_transmit()).collect()
}

fn reply_of(tx: &Transmit) -> ReplyMessage {
    Reply::decode(&tx.payload, DEFAULT_MAX_PAYLOAD).unwrap()
}

#[test]
fn remaining_now_counts_spent_calls_and_resets_to_the_limit() {
    let mut q = Quotas::new();
    assert_eq!(q.remaining_now(t(0), P, "k"), None);
    assert_eq!(
        q.report(t(0), P, "k", &obs(100, 3600), None),
        Reported::Updated
    );
    assert_eq!(q.remaining_now(t(0), P, "k"), Some(100));
    let g = q.grant(t(1), P, "k", 30, 0, 10, DEFAULT_LEASE_TTL).unwrap();
    assert_eq!(g.calls, 30);
    // Lent calls are not spent, but they are not available either.
    assert_eq!(q.remaining_now(t(1), P, "k"), Some(100));
    assert_eq!(q.available(t(1), P, "k", 0), Some(70));
    q.end_lease(t(2), g.id, Some(10));
    assert_eq!(q.remaining_now(t(2), P, "k"), Some(90));
    assert_eq!(q.available(t(2), P, "k", 0), Some(90));
    // At the reset: the limit.
    assert_eq!(q.remaining_now(t(3600), P, "k"), Some(5000));
    q.check_consistency().unwrap();
}

#[test]
fn a_lease_never_exceeds_remaining_less_floor_less_lent() {
    let mut q = Quotas::new();
    q.report(t(0), P, "k", &obs(100, 3600), None);
    let a = q
        .grant(t(0), P, "k", 60, 20, 10, DEFAULT_LEASE_TTL)
        .unwrap();
    assert_eq!(a.calls, 60);
    let b = q
        .grant(t(0), P, "k", 60, 20, 10, DEFAULT_LEASE_TTL)
        .unwrap();
    assert_eq!(b.calls, 20);
    assert_eq!(q.grant(t(0), P, "k", 1, 20, 10, DEFAULT_LEASE_TTL), None);
    // The cap on leases outstanding.
    let mut q = Quotas::new();
    q.report(t(0), P, "k", &obs(100, 3600), None);
    assert!(q.grant(t(0), P, "k", 1, 0, 1, DEFAULT_LEASE_TTL).is_some());
    assert_eq!(q.grant(t(0), P, "k", 1, 0, 1, DEFAULT_LEASE_TTL), None);
    // Nothing known: one call, to learn.
    let mut q = Quotas::new();
    assert_eq!(
        q.grant(t(0), P, "k", 50, 0, 10, DEFAULT_LEASE_TTL)
            .map(|g| g.calls),
        Some(1)
    );
}

#[test]
fn unreported_leases_end_at_their_deadline_fully_used() {
    let mut q = Quotas::new();
    q.report(t(0), P, "k", &obs(100, 3600), None);
    let g = q
        .grant(t(0), P, "k", 40, 0, 10, Duration::from_secs(60))
        .unwrap();
    assert_eq!(q.next_lease_end(), Some(t(60)));
    assert!(q.end_due_leases(t(59)).is_empty());
    let ended = q.end_due_leases(t(60));
    assert_eq!(ended.len(), 1);
    assert_eq!(q.lease(g.id), None);
    assert_eq!(q.remaining_now(t(60), P, "k"), Some(60));
    assert_eq!(q.next_lease_end(), None);
    q.check_consistency().unwrap();
}

#[test]
fn older_reports_are_ignored_and_never_raise_a_used_window() {
    let mut q = Quotas::new();
    q.report(t(10), P, "k", &dated(90, 3600, 10), None);
    // Earlier Date, more remaining: older, ignored.
    assert_eq!(
        q.report(t(11), P, "k", &dated(95, 3600, 5), None),
        Reported::Ignored
    );
    assert_eq!(q.remaining_now(t(11), P, "k"), Some(90));
    // Earlier Date, fewer remaining: lowers.
    assert_eq!(
        q.report(t(12), P, "k", &dated(80, 3600, 6), None),
        Reported::Lowered
    );
    assert_eq!(q.remaining_now(t(12), P, "k"), Some(80));
    // A report of an earlier window: ignored.
    assert_eq!(
        q.report(t(13), P, "k", &dated(4000, 100, 13), None),
        Reported::Ignored
    );
    assert_eq!(q.remaining_now(t(13), P, "k"), Some(80));
    // A newer one in the same window: taken.
    assert_eq!(
        q.report(t(14), P, "k", &dated(70, 3600, 14), None),
        Reported::Updated
    );
    assert_eq!(q.remaining_now(t(14), P, "k"), Some(70));
    // The next window: taken, even with more calls.
    assert_eq!(
        q.report(t(3700), P, "k", &dated(4999, 7200, 3700), None),
        Reported::Updated
    );
    assert_eq!(q.remaining_now(t(3700), P, "k"), Some(4999));
    // Another resource: ignored.
    let mut q = Quotas::new();
    let core = Observation {
        resource: Some("core".into()),
        ..obs(90, 3600)
    };
    q.report(t(0), P, "k", &core, None);
    let search = Observation {
        resource: Some("search".into()),
        ..obs(5, 3600)
    };
    assert_eq!(q.report(t(1), P, "k", &search, None), Reported::Ignored);
    assert_eq!(q.remaining_now(t(1), P, "k"), Some(90));
}

#[test]
fn a_report_taken_before_a_lease_ended_cannot_raise_the_count() {
    let mut q = Quotas::new();
    q.report(t(10), P, "k", &dated(100, 3600, 10), None);
    let g = q
        .grant(t(10), P, "k", 50, 0, 10, DEFAULT_LEASE_TTL)
        .unwrap();
    q.end_lease(t(30), g.id, Some(50));
    assert_eq!(q.remaining_now(t(30), P, "k"), Some(50));
    // Sent at 20 (before the lease's calls ended), arrives late.
    assert_eq!(
        q.report(t(31), P, "k", &dated(80, 3600, 20), None),
        Reported::Ignored
    );
    assert_eq!(q.remaining_now(t(31), P, "k"), Some(50));
}

#[test]
fn skew_is_smoothed_bounded_and_converts_reset_times() {
    let mut s = Skew::default();
    s.observe(t(1030), t(1000));
    assert_eq!(s.offset_ms, 30_500);
    s.observe(t(1030), t(1000));
    assert_eq!(s.offset_ms, 30_500);
    s.observe(t(1034), t(1000));
    assert_eq!(s.offset_ms, 30_500 + 1000);
    let mut far = Skew::default();
    far.observe(t(10_000), t(0));
    assert_eq!(far.offset_ms, MAX_SKEW.as_millis() as i64);
    // The platform runs 30 s ahead: its reset is 30 s earlier on our clock.
    let mut q = Quotas::new();
    q.report(t(1000), P, "k", &dated(0, 4630, 1030), None);
    let view = q
        .account(P, &Account::Key("k".into()))
        .unwrap()
        .view
        .clone()
        .unwrap();
    // (Taken half a second late, for the rounding of `Date`.)
    assert_eq!(view.reset, Some(Timestamp::from_millis(4_600_000)));
}

#[test]
fn keys_of_one_account_share_its_quota() {
    let mut q = Quotas::new();
    q.set_account(t(0), P, "a", Some("alice"), None);
    q.set_account(t(0), P, "b", Some("alice"), Some(5000));
    assert_eq!(q.remaining_now(t(0), P, "a"), Some(5000));
    q.report(t(1), P, "a", &obs(10, 3600), None);
    assert_eq!(q.remaining_now(t(1), P, "b"), Some(10));
    assert_eq!(
        q.keys_of_account(P, &Account::Named("alice".into())),
        vec!["a".to_string(), "b".to_string()]
    );
    q.forget_key(P, "a");
    assert_eq!(q.account_of(P, "a"), Account::Key("a".into()));
    assert_eq!(q.remaining_now(t(1), P, "b"), Some(10));
    assert!(!format!("{:?}", Account::Key("ghp_secretsecret".into())).contains("secret"));
}

#[test]
fn forecast_gives_remaining_burn_rate_and_dry_time() {
    let mut q = Quotas::new();
    q.report(t(0), P, "k", &obs(1000, 36_000), None);
    q.report(t(600), P, "k", &obs(900, 36_000), None);
    let f = q.forecast(t(600), P);
    assert_eq!(f.remaining, Some(900));
    assert_eq!(f.burn_per_hour, Some(600));
    assert_eq!(f.dry_at, Some(t(600 + 5400)));
    assert_eq!(q.forecast(t(0), "other"), Forecast::default());
    // A first report after PUBLISH's `limit` hint spends nothing: the hint
    // was a guess.
    let mut q = Quotas::new();
    q.set_account(t(0), P, "k", None, Some(5000));
    q.report(t(60), P, "k", &obs(1000, 36_000), None);
    assert_eq!(q.forecast(t(60), P).burn_per_hour, None);
    q.report(t(120), P, "k", &obs(900, 36_000), None);
    assert_eq!(q.forecast(t(120), P).burn_per_hour, Some(6_000));
}

// -- the engine's quota paths --

#[test]
fn with_nothing_known_the_engine_chooses_as_the_pool_does() {
    let mut e = engine_with(EngineConfig::default());
    let mut pool = crate::KeyPool::new();
    let mut rng = SplitMix64::new(7);
    for k in ["a", "b", "c", "d"] {
        e.publish(t(0), P, k);
        pool.publish(P, k);
    }
    for i in 0..50 {
        let want = match pool.assign(P, t(i), &mut rng) {
            Assignment::Key(k) => k.to_string(),
            other => panic!("{other:?}"),
        };
        match e.assign(t(i), P) {
            Assignment::Key(k) => assert_eq!(k, want),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_key_at_its_floor_is_withheld_until_its_reset() {
    let mut e = engine_with(floored(100));
    e.publish(t(0), P, "a");
    e.publish(t(0), P, "b");
    e.report(t(1), P, "a", &obs(100, 3600), None);
    assert_eq!(
        e.pool().state(P, "a", t(1)),
        Some(KeyState::Expired {
            refresh_at: t(3600)
        })
    );
    for i in 0..20 {
        assert_eq!(e.assign(t(2 + i), P), Assignment::Key("b"));
    }
    assert_eq!(e.pool().state(P, "a", t(3600)), Some(KeyState::Fresh));
    assert_eq!(e.quotas().remaining_now(t(3600), P, "a"), Some(5000));
}

#[test]
fn leases_stop_at_the_floor_and_wait_for_a_lease_to_end() {
    let mut e = engine_with(floored(100));
    e.publish(t(0), P, "a");
    e.report(t(0), P, "a", &obs(300, 3600), None);
    let first = match e.lease(t(0), P, 150) {
        Leased::Granted { key, lease } => {
            assert_eq!((key.as_str(), lease.calls), ("a", 150));
            lease
        }
        other => panic!("{other:?}"),
    };
    match e.lease(t(0), P, 150) {
        Leased::Granted { lease, .. } => assert_eq!(lease.calls, 50),
        other => panic!("{other:?}"),
    }
    // Everything above the floor is lent: wait for the first lease's end.
    assert_eq!(
        e.lease(t(0), P, 1),
        Leased::Wait {
            refresh_at: first.until
        }
    );
    // A plain NEW is not given the key either.
    assert_eq!(
        e.assign(t(0), P),
        Assignment::Wait {
            refresh_at: first.until
        }
    );
    // The first lease returns 100 unused calls.
    e.report(
        t(1),
        P,
        "a",
        &Observation::default(),
        Some(LeaseReturn {
            lease_id: first.id,
            used: Some(50),
            done: true,
        }),
    );
    match e.lease(t(1), P, 500) {
        Leased::Granted { lease, .. } => assert_eq!(lease.calls, 100),
        other => panic!("{other:?}"),
    }
    // Leases end unreported at their deadline: the account is at its floor and
    // the key is withheld until the reset.
    assert!(e.poll_timeout().is_some_and(|at| at <= first.until));
    let end = first.until.saturating_add(Duration::from_secs(1));
    e.handle_timeout(end);
    assert!(e.quotas().leases().next().is_none());
    // 300 - 50 used - 50 and 100 unreported = the floor.
    assert_eq!(e.quotas().remaining_now(end, P, "a"), Some(100));
    assert!(matches!(
        e.pool().state(P, "a", end),
        Some(KeyState::Expired { .. })
    ));
    e.quotas().check_consistency().unwrap();
}

#[test]
fn an_expire_expires_every_key_of_the_account() {
    let mut e = engine_with(EngineConfig::default());
    e.publish_account(t(0), P, "a", Some("alice"), None);
    e.publish_account(t(0), P, "b", Some("alice"), None);
    e.publish(t(0), P, "c");
    e.expire(t(1), P, "a", t(100));
    let expired = KeyState::Expired { refresh_at: t(100) };
    assert_eq!(e.pool().state(P, "b", t(1)), Some(expired));
    assert_eq!(e.pool().state(P, "c", t(1)), Some(KeyState::Fresh));
}

#[test]
fn strategies_choose_by_remaining_calls() {
    let mut config = EngineConfig::default();
    config
        .quota
        .selections
        .insert(P.into(), Selection::MostRemaining);
    let mut e = engine_with(config);
    for k in ["a", "b", "c"] {
        e.publish(t(0), P, k);
    }
    e.report(t(0), P, "a", &obs(10, 3600), None);
    e.report(t(0), P, "b", &obs(300, 3600), None);
    e.report(t(0), P, "c", &obs(20, 3600), None);
    for _ in 0..10 {
        assert_eq!(e.assign(t(1), P), Assignment::Key("b"));
    }
    let mut config = EngineConfig::default();
    config
        .quota
        .selections
        .insert(P.into(), Selection::WeightedRemaining);
    let mut e = engine_with(config);
    for k in ["a", "b"] {
        e.publish(t(0), P, k);
    }
    e.report(t(0), P, "a", &obs(1, 3600), None);
    e.report(t(0), P, "b", &obs(999, 3600), None);
    let b = (0..1000)
        .filter(|_| e.assign(t(1), P) == Assignment::Key("b"))
        .count();
    assert!(b > 950, "{b}");
}

mod wire;
