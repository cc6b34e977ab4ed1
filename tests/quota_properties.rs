//! Property tests of quota awareness: random sequences of publishes (with and
//! without accounts), reports (in and out of order), leases, plain NEWs,
//! expires and time steps, checked after every step:
//!
//! - the calls lent in the outstanding leases of an account are at most its
//!   remaining calls less its floor;
//! - no key is handed out (with or without a lease) at or under its floor;
//! - with no quota information at all, the engine chooses exactly as
//!   [`KeyPool`]'s uniform choice does for the same seed;
//! - a report out of order never raises the remaining count of its window;
//! - the records a save writes after each step (only those that changed),
//!   laid over those written before, restore the quota state as it is.

use keyman::engine::StateGeneration;
use keyman::pool::{Selection, StateRecords, Weight, decode_records};
use keyman::quota::{Account, LeaseReturn, Observation, Quotas, Reported};
use keyman::{Assignment, Engine, EngineConfig, KeyPool, Leased, SplitMix64, Timestamp};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What the runs did together: leases granted, lease requests that had to
/// wait, reports that moved a view, reports ignored.
static SEEN: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

fn count(i: usize) {
    SEEN[i].fetch_add(1, Ordering::Relaxed);
}

const P: &str = "github_rest";
const KEYS: [&str; 5] = ["ghp_k0", "ghp_k1", "ghp_k2", "ghp_k3", "ghp_k4"];
/// 2023-11-14, in Unix epoch seconds.
const START: u64 = 1_700_000_000;

fn pick(g: &mut Gen, n: usize) -> usize {
    usize::from(u8::arbitrary(g)) % n
}

fn small(g: &mut Gen, n: u64) -> u64 {
    u64::from(u16::arbitrary(g)) % n
}

#[derive(Clone, Debug)]
enum Op {
    Publish(usize),
    /// Into account "alice", with a limit hint or not.
    PublishAlice(usize, Option<u64>),
    Unpublish(usize),
    /// remaining, reset (seconds after START, in windows of an hour), Date
    /// (seconds after START, possibly before earlier ones).
    Report(usize, u64, u64, u64),
    Lease(u64),
    /// End the n-th outstanding lease, having used so many calls.
    Done(usize, u64),
    Assign,
    Expire(usize, u64),
    Advance(u64),
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        let k = pick(g, KEYS.len());
        match pick(g, 20) {
            0 | 1 => Op::Publish(k),
            2 => Op::PublishAlice(
                k,
                if bool::arbitrary(g) {
                    Some(small(g, 400))
                } else {
                    None
                },
            ),
            3 => Op::Unpublish(k),
            4..=7 => Op::Report(k, small(g, 400), 3600 * (1 + small(g, 3)), small(g, 7200)),
            8..=11 => Op::Lease(1 + small(g, 120)),
            12 | 13 => Op::Done(pick(g, 8), small(g, 150)),
            14 | 15 => Op::Assign,
            16 => Op::Expire(k, 1 + small(g, 4000)),
            _ => Op::Advance(small(g, 900)),
        }
    }
}

#[derive(Clone, Debug)]
struct Run {
    floor: u64,
    alice_floor: Option<u64>,
    max_leases: usize,
    ops: Vec<Op>,
}

impl Arbitrary for Run {
    fn arbitrary(g: &mut Gen) -> Self {
        Run {
            floor: small(g, 60),
            alice_floor: if bool::arbitrary(g) {
                Some(small(g, 120))
            } else {
                None
            },
            max_leases: 1 + pick(g, 6),
            ops: Vec::arbitrary(g),
        }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let me = self.clone();
        Box::new(self.ops.shrink().map(move |ops| Run { ops, ..me.clone() }))
    }
}

fn config(run: &Run) -> EngineConfig {
    let mut c = EngineConfig::default();
    c.quota.floors.insert(P.into(), run.floor);
    if let Some(f) = run.alice_floor {
        c.quota
            .account_floors
            .entry(P.into())
            .or_default()
            .insert("alice".into(), f);
    }
    c.quota.max_leases = run.max_leases;
    c.quota.lease_ttl = Duration::from_secs(300);
    c
}

/// The leases granted and not yet ended, as the test saw them.
#[derive(Default)]
struct Seen {
    leases: Vec<u64>,
    /// Accounts whose reservations a report, an over-reported lease or a new
    /// hint may have put over the remaining calls (the platform said so: the
    /// engine cannot take back calls it lent); cleared once they have no lease.
    tainted: BTreeSet<Account>,
}

fn floor_of(e: &Engine<SplitMix64>, key: &str) -> u64 {
    let account = e.quotas().account_of(P, key);
    e.config().quota.floor(P, &account)
}

/// Checks a key handed out at `now`: not at or under its floor, and not when
/// everything above the floor is lent.
fn check_handed_out(e: &Engine<SplitMix64>, now: Timestamp, key: &str) -> Result<(), String> {
    let floor = floor_of(e, key);
    if let Some(r) = e.quotas().remaining_now(now, P, key)
        && r <= floor
    {
        return Err(format!(
            "{key} handed out with {r} calls left, floor {floor}"
        ));
    }
    Ok(())
}

fn check_reservations(
    e: &Engine<SplitMix64>,
    now: Timestamp,
    seen: &mut Seen,
) -> Result<(), String> {
    e.quotas().check_consistency()?;
    e.pool().check_consistency()?;
    for (platform, account, state) in e.quotas().accounts() {
        if state.leases == 0 {
            seen.tainted.remove(account);
            continue;
        }
        if seen.tainted.contains(account) {
            continue;
        }
        let floor = e.config().quota.floor(platform, account);
        if let Some(r) = state.view.as_ref().and_then(|v| v.remaining_now(now))
            && state.leased > r.saturating_sub(floor)
        {
            return Err(format!(
                "{account:?}: {} calls lent, {r} remaining, floor {floor}",
                state.leased
            ));
        }
    }
    Ok(())
}

fn taint_if_leased(e: &Engine<SplitMix64>, seen: &mut Seen, key: &str) {
    let account = e.quotas().account_of(P, key);
    if e.quotas()
        .account(P, &account)
        .is_some_and(|s| s.leases > 0)
    {
        seen.tainted.insert(account);
    }
}

/// The records saved so far, as a store holds them, and the generation of
/// the state they hold.
#[derive(Default)]
struct Saved {
    records: StateRecords,
    generation: StateGeneration,
}

impl Saved {
    /// Saves what changed since the last save, as the orchestrator does, and
    /// checks that the records restore the engine's quota state.
    fn save_and_check(&mut self, e: &Engine<SplitMix64>) -> Result<(), String> {
        let changed = e.changed_since(self.generation);
        self.records.extend(e.encode_records(&changed));
        self.generation = e.state_generation();
        let decoded = decode_records(&self.records).map_err(|err| err.to_string())?;
        let restored = Quotas::from_snapshot(&decoded.quotas);
        restored.check_consistency()?;
        if restored.snapshot() != e.quotas().snapshot() {
            return Err(format!(
                "the saved records restore {:?}, not {:?}",
                restored.snapshot(),
                e.quotas().snapshot()
            ));
        }
        Ok(())
    }
}

fn run_quota(run: &Run, check_saves: bool) -> Result<(), String> {
    let mut saved = check_saves.then(Saved::default);
    let mut e = Engine::new(config(run), SplitMix64::new(11));
    let mut now = Timestamp::from_secs(START);
    let at = |s: u64| Timestamp::from_secs(START + s);
    let mut seen = Seen::default();
    for op in &run.ops {
        match op {
            Op::Publish(k) => {
                e.publish(now, P, KEYS[*k]);
            }
            Op::PublishAlice(k, limit) => {
                // Joining an account, or a hint, may start a view under the
                // calls already lent (as unknown, one each).
                taint_if_leased(&e, &mut seen, KEYS[*k]);
                e.publish_account(now, P, KEYS[*k], Some("alice"), *limit);
                taint_if_leased(&e, &mut seen, KEYS[*k]);
            }
            Op::Unpublish(k) => {
                e.unpublish(now, P, KEYS[*k]);
            }
            Op::Report(k, remaining, reset, date) => {
                taint_if_leased(&e, &mut seen, KEYS[*k]);
                let obs = Observation {
                    remaining: Some(*remaining),
                    limit: Some(400),
                    reset: Some(at(*reset)),
                    server_date: Some(at(*date)),
                    resource: None,
                };
                match e.report(now, P, KEYS[*k], &obs, None) {
                    Reported::Ignored => count(3),
                    _ => count(2),
                }
            }
            Op::Lease(want) => {
                // What could be lent of each key before the grant.
                let before: BTreeMap<&str, Option<u64>> = KEYS
                    .iter()
                    .map(|k| (*k, e.quotas().available(now, P, k, floor_of(&e, k))))
                    .collect();
                let answer = e.lease(now, P, *want);
                if let Leased::Wait { .. } = answer {
                    count(1);
                }
                if let Leased::Granted { key, lease } = answer {
                    count(0);
                    if lease.calls == 0 || lease.calls > *want {
                        return Err(format!("lease of {} calls for {want}", lease.calls));
                    }
                    match before.get(key.as_str()).copied().flatten() {
                        Some(avail) if lease.calls > avail => {
                            return Err(format!(
                                "lease of {} calls of {key} with {avail} available",
                                lease.calls
                            ));
                        }
                        None if lease.calls != 1 => {
                            return Err(format!("lease of {} calls, nothing known", lease.calls));
                        }
                        _ => {}
                    }
                    if e.quotas().leases_of(P, &key) > run.max_leases {
                        return Err(format!("more than {} leases", run.max_leases));
                    }
                    check_handed_out(&e, now, &key).or_else(|err| {
                        // Remaining calls are now what was left before the lease.
                        let r = e.quotas().remaining_now(now, P, &key).unwrap_or(0);
                        if r > floor_of(&e, &key) {
                            Ok(())
                        } else {
                            Err(err)
                        }
                    })?;
                    seen.leases.push(lease.id);
                }
            }
            Op::Done(n, used) => {
                if seen.leases.is_empty() {
                    continue;
                }
                let id = seen.leases.remove(n % seen.leases.len());
                let Some(lease) = e.quotas().lease(id).cloned() else {
                    continue;
                };
                if *used > lease.calls {
                    seen.tainted.insert(lease.account.clone());
                }
                let ret = LeaseReturn {
                    lease_id: id,
                    used: Some(*used),
                    done: true,
                };
                e.report(now, P, &lease.key, &Observation::default(), Some(ret));
            }
            Op::Assign => {
                if let Assignment::Key(k) = e.assign(now, P) {
                    let k = k.to_string();
                    check_handed_out(&e, now, &k)?;
                    let floor = floor_of(&e, &k);
                    if e.quotas().available(now, P, &k, floor) == Some(0) {
                        return Err(format!("{k} handed out with everything lent"));
                    }
                }
            }
            Op::Expire(k, secs) => {
                e.expire(
                    now,
                    P,
                    KEYS[*k],
                    now.saturating_add(Duration::from_secs(*secs)),
                );
            }
            Op::Advance(secs) => {
                let to = now.saturating_add(Duration::from_secs(*secs));
                while let Some(t) = e.poll_timeout().filter(|t| *t <= to) {
                    now = t.max(now);
                    e.handle_timeout(now);
                    check_reservations(&e, now, &mut seen)?;
                }
                now = to;
                e.handle_timeout(now);
            }
        }
        while e.poll_transmit().is_some() {}
        while e.poll_event().is_some() {}
        check_reservations(&e, now, &mut seen)?;
        if let Some(saved) = saved.as_mut() {
            saved.save_and_check(&e)?;
        }
    }
    Ok(())
}

#[test]
fn leases_never_overdraw_an_account_and_no_key_is_handed_out_at_its_floor() {
    fn prop(run: Run) -> TestResult {
        match run_quota(&run, false) {
            Ok(()) => TestResult::passed(),
            Err(e) => TestResult::error(e),
        }
    }
    QuickCheck::new()
        .rng(Gen::new(60))
        .tests(400)
        .quickcheck(prop as fn(Run) -> TestResult);
    let seen: Vec<u64> = SEEN.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    assert!(
        seen.iter().all(|&n| n > 0),
        "granted, waited, reports taken, ignored: {seen:?}"
    );
}

#[test]
fn saving_only_what_changed_after_every_step_restores_the_quota_state() {
    fn prop(run: Run) -> TestResult {
        match run_quota(&run, true) {
            Ok(()) => TestResult::passed(),
            Err(e) => TestResult::error(e),
        }
    }
    QuickCheck::new()
        .rng(Gen::new(60))
        .tests(200)
        .quickcheck(prop as fn(Run) -> TestResult);
}

/// Operations that carry no quota information.
#[derive(Clone, Debug)]
enum PlainOp {
    Publish(usize),
    Unpublish(usize),
    Assign,
    Expire(usize, u64),
    Invalidate(usize),
    Advance(u64),
}

impl Arbitrary for PlainOp {
    fn arbitrary(g: &mut Gen) -> Self {
        let k = pick(g, KEYS.len());
        match pick(g, 10) {
            0 | 1 => PlainOp::Publish(k),
            2 => PlainOp::Unpublish(k),
            3..=5 => PlainOp::Assign,
            6 => PlainOp::Expire(k, 1 + small(g, 4000)),
            7 => PlainOp::Invalidate(k),
            _ => PlainOp::Advance(small(g, 2000)),
        }
    }
}

fn same_choice(ops: &[PlainOp], selection: Selection, seed: u64) -> Result<(), String> {
    let mut config = config(&Run {
        floor: 50,
        alice_floor: Some(10),
        max_leases: 3,
        ops: Vec::new(),
    });
    config.selection = selection;
    let mut e = Engine::new(config, SplitMix64::new(seed));
    let mut pool = KeyPool::new();
    let mut rng = SplitMix64::new(seed);
    let mut now = Timestamp::from_secs(START);
    for op in ops {
        match op {
            PlainOp::Publish(k) => {
                e.publish(now, P, KEYS[*k]);
                pool.publish(P, KEYS[*k]);
            }
            PlainOp::Unpublish(k) => {
                e.unpublish(now, P, KEYS[*k]);
                pool.unpublish(P, KEYS[*k]);
            }
            PlainOp::Assign => {
                let want = match pool.assign(P, now, &mut rng) {
                    Assignment::Key(k) => Some(k.to_string()),
                    _ => None,
                };
                let got = match e.assign(now, P) {
                    Assignment::Key(k) => Some(k.to_string()),
                    _ => None,
                };
                if got != want {
                    return Err(format!("engine chose {got:?}, the pool {want:?}"));
                }
            }
            PlainOp::Expire(k, secs) => {
                let until = now.saturating_add(Duration::from_secs(*secs));
                e.expire(now, P, KEYS[*k], until);
                pool.expire(P, KEYS[*k], until, now);
            }
            PlainOp::Invalidate(k) => {
                e.invalidate(now, P, KEYS[*k]);
                pool.invalidate(P, KEYS[*k], now);
            }
            PlainOp::Advance(secs) => {
                now = now.saturating_add(Duration::from_secs(*secs));
                e.handle_timeout(now);
                pool.refresh_due(now);
            }
        }
    }
    Ok(())
}

#[test]
fn with_no_quota_information_the_choice_is_exactly_the_uniform_one() {
    fn prop(ops: Vec<PlainOp>, seed: u64, strategy: u8) -> TestResult {
        // The quota strategies are uniform too when nothing is known.
        let selection = match strategy % 3 {
            0 => Selection::Uniform,
            1 => Selection::MostRemaining,
            _ => Selection::WeightedRemaining,
        };
        match same_choice(&ops, selection, seed) {
            Ok(()) => TestResult::passed(),
            Err(e) => TestResult::error(e),
        }
    }
    QuickCheck::new()
        .rng(Gen::new(80))
        .tests(400)
        .quickcheck(prop as fn(Vec<PlainOp>, u64, u8) -> TestResult);
}

#[test]
fn choosing_among_all_keys_eligible_draws_as_assign_does() {
    fn prop(n: u8, seed: u64, draws: u8) -> TestResult {
        let n = usize::from(n % 12) + 1;
        let mut a = KeyPool::new();
        let mut b = KeyPool::new();
        for i in 0..n {
            a.publish(P, &format!("k{i}"));
            b.publish(P, &format!("k{i}"));
        }
        let (mut ra, mut rb) = (SplitMix64::new(seed), SplitMix64::new(seed));
        let now = Timestamp::from_secs(START);
        for _ in 0..draws {
            let x = a.assign(P, now, &mut ra);
            let weight = |k: &str| {
                if k.len().is_multiple_of(2) {
                    Weight::Unknown
                } else {
                    Weight::Calls(7)
                }
            };
            let y = b.choose(P, now, &mut rb, Selection::Uniform, None, weight);
            if format!("{x:?}") != format!("{y:?}") {
                return TestResult::error(format!("{x:?} != {y:?}"));
            }
        }
        TestResult::passed()
    }
    QuickCheck::new()
        .tests(300)
        .quickcheck(prop as fn(u8, u64, u8) -> TestResult);
}

/// One report of a sequence on one key: remaining, reset (an hour window, by
/// number), Date (seconds).
#[derive(Clone, Debug)]
struct Rep {
    remaining: u64,
    window: u64,
    date: u64,
    /// Lend and end a lease of this many calls before the report.
    lease: Option<(u64, u64)>,
    dt: u64,
}

impl Arbitrary for Rep {
    fn arbitrary(g: &mut Gen) -> Self {
        Rep {
            remaining: small(g, 5001),
            window: 1 + small(g, 3),
            date: small(g, 3 * 3600),
            lease: if bool::arbitrary(g) {
                Some((1 + small(g, 200), small(g, 250)))
            } else {
                None
            },
            dt: small(g, 600),
        }
    }
}

#[test]
fn out_of_order_reports_never_raise_the_remaining_count_of_a_used_window() {
    fn prop(reps: Vec<Rep>) -> TestResult {
        let mut q = Quotas::new();
        let mut now = Timestamp::from_secs(START);
        let at = |s: u64| Timestamp::from_secs(START + s);
        // The latest Date reported so far of each window (by reset header).
        let mut latest: BTreeMap<u64, u64> = BTreeMap::new();
        for r in &reps {
            now = now.saturating_add(Duration::from_secs(r.dt));
            if let Some((calls, used)) = r.lease
                && let Some(g) = q.grant(now, P, "k", calls, 0, 100, Duration::from_secs(60))
            {
                q.end_lease(now, g.id, Some(used));
            }
            let reset = r.window * 3600;
            let newest_window = latest.keys().next_back().copied();
            let out_of_order = latest.get(&reset).is_some_and(|d| r.date < *d)
                || newest_window.is_some_and(|w| reset < w);
            let before = q.remaining_now(now, P, "k");
            let obs = Observation {
                remaining: Some(r.remaining),
                limit: Some(5000),
                reset: Some(at(reset)),
                server_date: Some(at(r.date)),
                resource: None,
            };
            let outcome = q.report(now, P, "k", &obs, None);
            let after = q.remaining_now(now, P, "k");
            if out_of_order
                && let (Some(b), Some(a)) = (before, after)
                && a > b
            {
                return TestResult::error(format!(
                    "{r:?} out of order raised {b} to {a} ({outcome:?})"
                ));
            }
            if outcome == Reported::Updated {
                let d = latest.entry(reset).or_insert(r.date);
                *d = (*d).max(r.date);
            }
        }
        TestResult::passed()
    }
    QuickCheck::new()
        .rng(Gen::new(40))
        .tests(500)
        .quickcheck(prop as fn(Vec<Rep>) -> TestResult);
}
