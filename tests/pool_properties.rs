//! Property tests of [`KeyPool`]: random sequences of operations over a few
//! platforms and keys, with time moving in random steps (often not at all, now and
//! then backwards), checked after every step against a plain reference model.

use keyman::harness::check_pool;
use keyman::pool::{Expired, Invalidated, Published};
use keyman::{Assignment, Counts, KeyPool, KeyState, Selection, SplitMix64, Timestamp};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};
use std::collections::BTreeMap;

const PLATFORMS: [&str; 3] = ["github_rest", "github_search", "gitlab_rest"];
const KEYS: [&str; 5] = ["k0", "k1", "k2", "k3", "k4"];
/// Some Tuesday in 2023, in Unix epoch milliseconds.
const START: u64 = 1_700_000_000_000;

fn pick(g: &mut Gen, n: usize) -> usize {
    usize::from(u8::arbitrary(g)) % n
}

/// Where an expire puts the refresh time.
#[derive(Clone, Debug)]
enum RefreshAt {
    /// `now` plus this many milliseconds (zero or negative: not in the future).
    Relative(i64),
    /// The platform's current earliest refresh time, to make ties.
    SameAsEarliest,
}

#[derive(Clone, Debug)]
enum Op {
    Publish(usize, usize),
    Unpublish(usize, usize),
    Assign(usize),
    Expire(usize, usize, RefreshAt),
    Invalidate(usize, usize),
    RefreshDue,
    List(usize),
    /// Jump the clock to exactly the platform's earliest refresh time, then assign.
    AssignAtEarliestRefresh(usize),
}

#[derive(Clone, Debug)]
struct Step {
    /// How far the clock moves before the operation, in milliseconds.
    dt: i64,
    op: Op,
}

impl Arbitrary for Step {
    fn arbitrary(g: &mut Gen) -> Self {
        let ms = |g: &mut Gen, max: u32| i64::from(u32::arbitrary(g) % max) + 1;
        let dt = match pick(g, 20) {
            0..=5 => 0,
            6..=10 => ms(g, 999),
            11..=15 => ms(g, 90) * 1000,
            16 => 1000,
            17 | 18 => ms(g, 3_600_000),
            _ => -ms(g, 30_000),
        };
        let (p, k) = (pick(g, PLATFORMS.len()), pick(g, KEYS.len()));
        let op = match pick(g, 100) {
            0..=24 => Op::Publish(p, k),
            25..=29 => Op::Unpublish(p, k),
            30..=52 => Op::Assign(p),
            53..=72 => {
                let at = match pick(g, 10) {
                    0 => RefreshAt::Relative(-ms(g, 5_000)),
                    1 => RefreshAt::Relative(0),
                    2 => RefreshAt::SameAsEarliest,
                    3 | 4 => RefreshAt::Relative(ms(g, 999)),
                    _ => RefreshAt::Relative(ms(g, 120) * 1000),
                };
                Op::Expire(p, k, at)
            }
            73..=79 => Op::Invalidate(p, k),
            80..=84 => Op::RefreshDue,
            85..=92 => Op::List(p),
            _ => Op::AssignAtEarliestRefresh(p),
        };
        Step { dt, op }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum M {
    Fresh,
    Expired(Timestamp),
    Invalid,
}

/// The reference: one map entry per (platform, key), refreshed lazily on the same
/// operations as the pool, so that a clock going backwards agrees too.
#[derive(Default)]
struct Model {
    platforms: Vec<&'static str>,
    keys: BTreeMap<(&'static str, &'static str), M>,
}

impl Model {
    fn known(&self, p: &str) -> bool {
        self.platforms.contains(&p)
    }

    fn of(&self, p: &'static str) -> impl Iterator<Item = (&'static str, M)> + '_ {
        self.keys
            .range((p, "")..)
            .take_while(move |((q, _), _)| *q == p)
            .map(|((_, k), m)| (*k, *m))
    }

    fn refresh(&mut self, p: &'static str, now: Timestamp) -> usize {
        let mut n = 0;
        for ((q, _), m) in self.keys.iter_mut() {
            if *q == p
                && let M::Expired(until) = *m
                && until <= now
            {
                *m = M::Fresh;
                n += 1;
            }
        }
        n
    }

    fn fresh(&self, p: &'static str) -> Vec<&'static str> {
        self.of(p)
            .filter(|(_, m)| *m == M::Fresh)
            .map(|(k, _)| k)
            .collect()
    }

    fn earliest(&self, p: &'static str) -> Option<Timestamp> {
        self.of(p)
            .filter_map(|(_, m)| match m {
                M::Expired(t) => Some(t),
                _ => None,
            })
            .min()
    }

    fn state_at(&self, p: &'static str, k: &'static str, now: Timestamp) -> Option<KeyState> {
        Some(match self.keys.get(&(p, k))? {
            M::Fresh => KeyState::Fresh,
            M::Expired(until) if *until <= now => KeyState::Fresh,
            M::Expired(until) => KeyState::Expired { refresh_at: *until },
            M::Invalid => KeyState::Invalid,
        })
    }

    fn counts(&self, p: &'static str) -> Counts {
        let mut c = Counts::default();
        for (_, m) in self.of(p) {
            match m {
                M::Fresh => c.fresh += 1,
                M::Expired(_) => c.expired += 1,
                M::Invalid => c.invalid += 1,
            }
        }
        c
    }
}

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

/// What must hold whatever the last operation was: the pool is internally
/// consistent (the harness's [`check_pool`]) and agrees with the model on every read that changes nothing.
fn check_agreement(pool: &KeyPool, model: &Model, now: Timestamp) -> Result<(), String> {
    check_pool(pool).map_err(|v| v.to_string())?;
    let platforms: Vec<&str> = pool.platforms().collect();
    if platforms != model.platforms {
        return Err(format!("platforms {platforms:?} != {:?}", model.platforms));
    }
    for p in PLATFORMS {
        if pool.has_platform(p) != model.known(p) {
            return Err(format!("has_platform({p}) disagrees"));
        }
        for k in KEYS {
            let (got, want) = (pool.state(p, k, now), model.state_at(p, k, now));
            if got != want {
                return Err(format!("state({p}, {k}) = {got:?}, model {want:?}"));
            }
        }
        let invalid = pool.invalid_keys(p);
        let want: Option<Vec<String>> = model.known(p).then(|| {
            model
                .of(p)
                .filter(|(_, m)| *m == M::Invalid)
                .map(|(k, _)| k.to_string())
                .collect()
        });
        if invalid != want {
            return Err(format!("invalid_keys({p}) = {invalid:?}, model {want:?}"));
        }
        if pool.next_refresh_of(p) != model.earliest(p) {
            return Err(format!(
                "next_refresh_of({p}) = {:?}, model {:?}",
                pool.next_refresh_of(p),
                model.earliest(p)
            ));
        }
    }
    let earliest = PLATFORMS.iter().filter_map(|p| model.earliest(p)).min();
    if pool.next_refresh() != earliest {
        return Err(format!(
            "next_refresh = {:?}, model {earliest:?}",
            pool.next_refresh()
        ));
    }
    Ok(())
}

/// Assigns from `p` at `now` and checks the answer against the model.
fn check_assign(
    pool: &mut KeyPool,
    model: &mut Model,
    p: &'static str,
    now: Timestamp,
    rng: &mut SplitMix64,
) -> Result<(), String> {
    let known = model.known(p);
    model.refresh(p, now);
    let fresh = model.fresh(p);
    let earliest = model.earliest(p);
    match pool.assign(p, now, rng) {
        Assignment::UnknownPlatform if !known => Ok(()),
        Assignment::NoKeys if known && fresh.is_empty() && earliest.is_none() => Ok(()),
        Assignment::Wait { refresh_at: until } if known && fresh.is_empty() => {
            if Some(until) != earliest {
                return Err(format!(
                    "wait until {until:?}, earliest refresh {earliest:?}"
                ));
            }
            if until <= now {
                return Err(format!("wait until {until:?} is not after now {now:?}"));
            }
            Ok(())
        }
        Assignment::Key(k) => match model.keys.get(&(p, k)) {
            Some(M::Fresh) if fresh.len() != 1 || fresh[0] == k => Ok(()),
            Some(M::Fresh) => Err(format!("assigned {k}, the only fresh key is {fresh:?}")),
            Some(M::Invalid) => Err(format!("assigned invalid key {k} of {p}")),
            Some(M::Expired(until)) => Err(format!(
                "assigned key {k} of {p} expired until {until:?} at {now:?}"
            )),
            None => Err(format!("assigned {k}, which is not published to {p}")),
        },
        other => Err(format!(
            "assign({p}) = {other:?}; model: known {known}, fresh {fresh:?}, earliest {earliest:?}"
        )),
    }
}

fn apply(
    pool: &mut KeyPool,
    model: &mut Model,
    step: &Step,
    now: &mut u64,
    rng: &mut SplitMix64,
) -> Result<(), String> {
    *now = now.saturating_add_signed(step.dt);
    let t = at(*now);
    match step.op {
        Op::Publish(p, k) => {
            let (p, k) = (PLATFORMS[p], KEYS[k]);
            if !model.known(p) {
                model.platforms.push(p);
            }
            let before = model.keys.get(&(p, k)).copied();
            let want = match before {
                None => Published::Added,
                Some(M::Invalid) => Published::Revived,
                Some(_) => Published::Unchanged,
            };
            if want != Published::Unchanged {
                model.keys.insert((p, k), M::Fresh);
            }
            let got = pool.publish(p, k);
            if got != want {
                return Err(format!("publish({p}, {k}) = {got:?}, model {want:?}"));
            }
            // Publishing again changes nothing, whatever the state.
            let again = pool.publish(p, k);
            if again != Published::Unchanged {
                return Err(format!("second publish({p}, {k}) = {again:?}"));
            }
        }
        Op::Unpublish(p, k) => {
            let (p, k) = (PLATFORMS[p], KEYS[k]);
            let want = model.keys.remove(&(p, k)).is_some();
            let got = pool.unpublish(p, k);
            if got != want {
                return Err(format!("unpublish({p}, {k}) = {got}, model {want}"));
            }
            if pool.state(p, k, t).is_some() {
                return Err(format!("{k} still in {p} after unpublish"));
            }
        }
        Op::Assign(p) => check_assign(pool, model, PLATFORMS[p], t, rng)?,
        Op::AssignAtEarliestRefresh(p) => {
            let p = PLATFORMS[p];
            if let Some(until) = model.earliest(p) {
                *now = until.as_millis();
            }
            check_assign(pool, model, p, at(*now), rng)?;
        }
        Op::Expire(p, k, ref refresh) => {
            let (p, k) = (PLATFORMS[p], KEYS[k]);
            let until = match refresh {
                RefreshAt::Relative(d) => at(now.saturating_add_signed(*d)),
                RefreshAt::SameAsEarliest => {
                    model.earliest(p).unwrap_or(at(now.saturating_add(1000)))
                }
            };
            let want = if !model.known(p) {
                Expired::Unchanged
            } else {
                model.refresh(p, t);
                match model.keys.get(&(p, k)).copied() {
                    _ if until <= t => Expired::Unchanged,
                    Some(M::Fresh) => Expired::Expired,
                    Some(M::Expired(old)) if until > old => Expired::Extended,
                    _ => Expired::Unchanged,
                }
            };
            if want != Expired::Unchanged {
                model.keys.insert((p, k), M::Expired(until));
            }
            let got = pool.expire(p, k, until, t);
            if got != want {
                return Err(format!(
                    "expire({p}, {k}, {until:?}) = {got:?}, model {want:?}"
                ));
            }
        }
        Op::Invalidate(p, k) => {
            let (p, k) = (PLATFORMS[p], KEYS[k]);
            let want = if !model.known(p) {
                Invalidated::Unknown
            } else {
                model.refresh(p, t);
                match model.keys.get(&(p, k)) {
                    None => Invalidated::Unknown,
                    Some(M::Invalid) => Invalidated::AlreadyInvalid,
                    Some(_) => Invalidated::Invalidated,
                }
            };
            if want == Invalidated::Invalidated {
                model.keys.insert((p, k), M::Invalid);
            }
            let got = pool.invalidate(p, k, t);
            if got != want {
                return Err(format!("invalidate({p}, {k}) = {got:?}, model {want:?}"));
            }
        }
        Op::RefreshDue => {
            let platforms = model.platforms.clone();
            let want: usize = platforms.iter().map(|p| model.refresh(p, t)).sum();
            let got = pool.refresh_due(t);
            if got != want {
                return Err(format!("refresh_due refreshed {got}, model {want}"));
            }
        }
        Op::List(p) => {
            let p = PLATFORMS[p];
            if model.known(p) {
                model.refresh(p, t);
            }
            let want_counts = model.known(p).then(|| model.counts(p));
            let counts = pool.counts(p, t);
            if counts != want_counts {
                return Err(format!("counts({p}) = {counts:?}, model {want_counts:?}"));
            }
            let Some(keys) = pool.keys(p, t) else {
                return match model.known(p) {
                    true => Err(format!("keys({p}) = None for a known platform")),
                    false => Ok(()),
                };
            };
            if !model.known(p) {
                return Err(format!("keys({p}) listed an unknown platform"));
            }
            // Fresh keys first (in any order), then expired keys by refresh time.
            let mut fresh = model.fresh(p);
            fresh.sort_unstable();
            let mut expired: Vec<(Timestamp, &str)> = model
                .of(p)
                .filter_map(|(k, m)| match m {
                    M::Expired(until) => Some((until, k)),
                    _ => None,
                })
                .collect();
            expired.sort_unstable();
            let (head, tail) = keys.split_at(fresh.len().min(keys.len()));
            let mut head: Vec<&str> = head.iter().map(String::as_str).collect();
            head.sort_unstable();
            let tail: Vec<&str> = tail.iter().map(String::as_str).collect();
            let want_tail: Vec<&str> = expired.iter().map(|(_, k)| *k).collect();
            if head != fresh || tail != want_tail {
                return Err(format!(
                    "keys({p}) = {keys:?}; model fresh {fresh:?}, expired {want_tail:?}"
                ));
            }
        }
    }
    check_agreement(pool, model, at(*now))
}

fn run(steps: &[Step], selection: Selection) -> Result<(), String> {
    let mut pool = KeyPool::with_selection(selection);
    let mut model = Model::default();
    let mut rng = SplitMix64::new(0x5EED);
    let mut now = START;
    for (i, step) in steps.iter().enumerate() {
        apply(&mut pool, &mut model, step, &mut now, &mut rng)
            .map_err(|e| format!("step {i} ({step:?}) at {now}: {e}"))?;
    }
    // Whatever state the sequence left: many draws reach every fresh key.
    let t = at(now);
    for p in PLATFORMS {
        if !model.known(p) {
            continue;
        }
        model.refresh(p, t);
        let fresh = model.fresh(p);
        let mut seen = Vec::new();
        for _ in 0..100 * fresh.len() {
            if let Assignment::Key(k) = pool.assign(p, t, &mut rng)
                && !seen.iter().any(|s: &String| s == k)
            {
                seen.push(k.to_string());
            }
        }
        seen.sort_unstable();
        if seen != fresh {
            return Err(format!(
                "{p}: {} draws reached {seen:?} of fresh {fresh:?}",
                100 * fresh.len()
            ));
        }
    }
    Ok(())
}

fn quickcheck(prop: fn(Vec<Step>) -> TestResult) {
    QuickCheck::new()
        .rng(Gen::new(80))
        .tests(300)
        .quickcheck(prop);
}

fn result(r: Result<(), String>) -> TestResult {
    match r {
        Ok(()) => TestResult::passed(),
        Err(e) => TestResult::error(e),
    }
}

#[test]
fn uniform_pool_agrees_with_the_model_after_every_step() {
    fn prop(steps: Vec<Step>) -> TestResult {
        result(run(&steps, Selection::Uniform))
    }
    quickcheck(prop);
}

#[test]
fn round_robin_pool_agrees_with_the_model_after_every_step() {
    fn prop(steps: Vec<Step>) -> TestResult {
        result(run(&steps, Selection::RoundRobin))
    }
    quickcheck(prop);
}

#[test]
fn an_expired_key_comes_back_exactly_at_its_refresh_time() {
    let mut pool = KeyPool::new();
    let mut rng = SplitMix64::new(1);
    pool.publish("p", "a");
    pool.publish("p", "b");
    assert_eq!(
        pool.expire("p", "a", at(START + 2_500), at(START)),
        Expired::Expired
    );
    assert_eq!(
        pool.expire("p", "b", at(START + 1_000), at(START)),
        Expired::Expired
    );
    assert_eq!(
        pool.assign("p", at(START + 999), &mut rng),
        Assignment::Wait {
            refresh_at: at(START + 1_000)
        }
    );
    assert_eq!(
        pool.assign("p", at(START + 1_000), &mut rng),
        Assignment::Key("b")
    );
    assert_eq!(
        pool.invalidate("p", "b", at(START + 1_000)),
        Invalidated::Invalidated
    );
    assert_eq!(
        pool.assign("p", at(START + 2_499), &mut rng),
        Assignment::Wait {
            refresh_at: at(START + 2_500)
        }
    );
    assert_eq!(
        pool.assign("p", at(START + 2_500), &mut rng),
        Assignment::Key("a")
    );
}

#[test]
fn uniform_assignment_spreads_evenly_over_the_fresh_keys() {
    // Keys leave and re-enter the fresh set first, so the dense array is shuffled.
    let keys: Vec<String> = (0..14).map(|i| format!("key-{i:02}")).collect();
    let mut pool = KeyPool::new();
    for k in &keys {
        pool.publish("p", k);
    }
    pool.expire("p", &keys[0], at(START + 10), at(START));
    pool.expire("p", &keys[5], at(START + 1_000_000), at(START));
    pool.invalidate("p", &keys[9], at(START));
    pool.unpublish("p", &keys[2]);
    pool.unpublish("p", &keys[13]);
    let now = at(START + 20);
    let fresh: Vec<&String> = keys
        .iter()
        .filter(|k| pool.state("p", k, now) == Some(KeyState::Fresh))
        .collect();
    assert_eq!(fresh.len(), 10);

    let draws = 20_000;
    let mut rng = SplitMix64::new(0xC0FFEE);
    let mut hits: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..draws {
        match pool.assign("p", now, &mut rng) {
            Assignment::Key(k) => *hits.entry(k.to_string()).or_default() += 1,
            other => panic!("expected a key, got {other:?}"),
        }
    }
    let mut reached: Vec<&String> = hits.keys().collect();
    reached.sort();
    assert_eq!(reached, fresh, "every fresh key and nothing else is drawn");

    let expected = f64::from(draws) / fresh.len() as f64;
    let mut chi2 = 0.0;
    for (k, &n) in &hits {
        let n = f64::from(n);
        assert!(
            (n - expected).abs() <= 0.5 * expected,
            "{k} drawn {n} times, expected about {expected}"
        );
        chi2 += (n - expected).powi(2) / expected;
    }
    // 9 degrees of freedom: P(chi2 > 27.88) = 0.001 for a uniform choice.
    assert!(chi2 < 27.88, "chi-square {chi2} over {hits:?}");
}

#[test]
fn publish_is_idempotent_in_every_state() {
    let mut pool = KeyPool::new();
    let mut rng = SplitMix64::new(9);
    pool.publish("p", "fresh");
    pool.publish("p", "expired");
    pool.publish("p", "other");
    pool.expire("p", "expired", at(START + 5_000), at(START));
    for _ in 0..3 {
        assert_eq!(pool.publish("p", "fresh"), Published::Unchanged);
        assert_eq!(pool.publish("p", "expired"), Published::Unchanged);
    }
    assert_eq!(
        pool.counts("p", at(START)),
        Some(Counts {
            fresh: 2,
            expired: 1,
            invalid: 0
        })
    );
    // One unpublish removes the key entirely, however often it was published.
    assert!(pool.unpublish("p", "fresh"));
    for _ in 0..200 {
        assert_eq!(
            pool.assign("p", at(START), &mut rng),
            Assignment::Key("other")
        );
    }
    check_pool(&pool).unwrap();
}
