//! Property tests of the probe schedule, through the engine, in virtual time
//! with the harness's driver (its invariants checked after every input):
//! random publishes, unpublishes, NEWs, INVALIDATEs, EXPIREs, time steps and
//! answers (valid, 401, throttled, failed, or none at all), checked against
//! every probe the engine gave out:
//!
//! - no more than `max_per_second` probes in any 1 000 ms;
//! - no more than `max_in_flight` unanswered at once;
//! - never two probes of one key within `min_interval`;
//! - after `n` failed or throttled probes of a key in a row, the next one
//!   waits at least the backoff (`backoff × 2^(n-1)`, at most `max_backoff`)
//!   and, after a `Retry-After`, at least that;
//! - a key the platform answered 401 for is not handed out again until it is
//!   published again.

use keyman::harness::{Driver, START_MILLIS};
use keyman::probe::{
    ProbeAnswer, ProbeConfig, ProbeFacts, ProbeOutcome, ProbeRequest, ResourceQuota,
};
use keyman::{Engine, EngineConfig, Reply, SplitMix64, Timestamp};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const ANN: &str = "augur-oauth-announce";
const REQ: &str = "worker-oath-request";
const PLATFORMS: [&str; 3] = ["github_rest", "github_search", "gitlab_rest"];

/// Probes given out, answered 401, throttled, failed, over all runs.
static SEEN: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

fn key(i: usize) -> String {
    format!("ghp_propertyKey{i:03}zzzzzzzzzzzzzzzzzzzzzz")
}

fn pick(g: &mut Gen, n: usize) -> usize {
    usize::from(u8::arbitrary(g)) % n
}

#[derive(Clone, Debug)]
enum Answer {
    Valid(u64),
    Unauthorized,
    Throttled(Option<u64>),
    Failed,
}

#[derive(Clone, Debug)]
enum Op {
    Publish(usize, usize),
    Unpublish(usize, usize),
    New(usize),
    Invalidate(usize, usize),
    Expire(usize, u64),
    Advance(u64),
    /// Answer the n-th pending probe.
    Answer(usize, Answer),
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        let k = pick(g, 40);
        let p = pick(g, PLATFORMS.len());
        match pick(g, 12) {
            0 | 1 => Op::Publish(k, p),
            2 => Op::Unpublish(k, p),
            3 => Op::New(p),
            4 => Op::Invalidate(k, p),
            5 => Op::Expire(k, u64::from(u16::arbitrary(g)) % 600),
            6 | 7 => Op::Advance(u64::from(u16::arbitrary(g)) % 20_000),
            _ => Op::Answer(
                pick(g, 50),
                match pick(g, 8) {
                    0 => Answer::Unauthorized,
                    1 => Answer::Throttled(bool::arbitrary(g).then(|| u64::from(u8::arbitrary(g)))),
                    2 | 3 => Answer::Failed,
                    _ => Answer::Valid(u64::from(u16::arbitrary(g)) % 5000),
                },
            ),
        }
    }
}

#[derive(Clone, Debug)]
struct Run {
    max_per_second: u32,
    max_in_flight: usize,
    ops: Vec<Op>,
}

impl Arbitrary for Run {
    fn arbitrary(g: &mut Gen) -> Self {
        Run {
            max_per_second: 1 + u32::from(u8::arbitrary(g)) % 8,
            max_in_flight: 1 + pick(g, 10),
            ops: Vec::arbitrary(g),
        }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let (m, f) = (self.max_per_second, self.max_in_flight);
        Box::new(self.ops.shrink().map(move |ops| Run {
            max_per_second: m,
            max_in_flight: f,
            ops,
        }))
    }
}

/// What the checks follow of one key (per provider; the test's keys are all
/// probed by one provider per platform, and a key is one token).
#[derive(Default)]
struct KeyLog {
    last_sent: Option<Timestamp>,
    /// Failures in a row, and when the last one was settled, with its
    /// `Retry-After`.
    failures: u32,
    failed_at: Option<(Timestamp, Option<u64>)>,
}

fn run(r: &Run) -> Result<(), String> {
    let config = ProbeConfig {
        max_per_second: r.max_per_second,
        max_in_flight: r.max_in_flight,
        ..ProbeConfig::default()
    };
    let engine = Engine::new(
        EngineConfig {
            probe: Some(config.clone()),
            ..EngineConfig::default()
        },
        SplitMix64::new(9),
    );
    let mut d = Driver::with_engine(engine, Timestamp::from_millis(START_MILLIS)).checked(true);
    let mut sent: Vec<Timestamp> = Vec::new();
    let mut pending: Vec<ProbeRequest> = Vec::new();
    let mut logs: BTreeMap<(String, u8), KeyLog> = BTreeMap::new();
    let mut revoked: BTreeSet<(String, String)> = BTreeSet::new();
    let provider_of = |p: &str| u8::from(p.starts_with("gitlab"));
    for op in &r.ops {
        match op {
            Op::Publish(k, p) => {
                let msg = format!(
                    r#"{{"type": "PUBLISH", "key_str": "{}", "key_platform": "{}"}}"#,
                    key(*k),
                    PLATFORMS[*p]
                );
                d.handle(ANN, msg.as_bytes()).map_err(|v| v.0)?;
                revoked.remove(&(key(*k), PLATFORMS[*p].to_string()));
            }
            Op::Unpublish(k, p) => {
                let msg = format!(
                    r#"{{"type": "UNPUBLISH", "key_str": "{}", "key_platform": "{}"}}"#,
                    key(*k),
                    PLATFORMS[*p]
                );
                d.handle(ANN, msg.as_bytes()).map_err(|v| v.0)?;
            }
            Op::New(p) => {
                let msg = format!(
                    r#"{{"type": "NEW", "key_platform": "{}", "requester_id": 7}}"#,
                    PLATFORMS[*p]
                );
                d.handle(REQ, msg.as_bytes()).map_err(|v| v.0)?;
                for reply in d.take_replies(&format!("{REQ}-7")) {
                    if let Ok(m) = Reply::decode(&reply, usize::MAX)
                        && let Reply::Key(k) = m.reply
                        && revoked.contains(&(k.clone(), PLATFORMS[*p].to_string()))
                    {
                        return Err(format!("{k} handed out after a 401"));
                    }
                }
            }
            Op::Invalidate(k, p) => {
                let msg = format!(
                    r#"{{"type": "INVALIDATE", "key_str": "{}", "key_platform": "{}", "requester_id": 7}}"#,
                    key(*k),
                    PLATFORMS[*p]
                );
                d.handle(REQ, msg.as_bytes()).map_err(|v| v.0)?;
            }
            Op::Expire(k, s) => {
                let refresh = d.now().as_millis() / 1000 + s;
                let msg = format!(
                    r#"{{"type": "EXPIRE", "key_str": "{}", "key_platform": "github_rest", "refresh_time": {refresh}, "requester_id": 7}}"#,
                    key(*k)
                );
                d.handle(REQ, msg.as_bytes()).map_err(|v| v.0)?;
            }
            Op::Advance(ms) => {
                let to = Timestamp::from_millis(d.now().as_millis() + ms);
                d.advance_to(to).map_err(|v| v.0)?;
            }
            Op::Answer(n, a) => {
                if pending.is_empty() {
                    continue;
                }
                let p = pending.remove(n % pending.len());
                let outcome = match a {
                    Answer::Valid(remaining) => ProbeOutcome::Valid(ProbeFacts {
                        server_date: Some(Timestamp::from_secs(d.now().as_secs())),
                        resources: vec![ResourceQuota {
                            resource: "core".into(),
                            limit: Some(5000),
                            remaining: Some(*remaining),
                            reset: Some(Timestamp::from_secs(d.now().as_secs() + 1800)),
                        }],
                        ..ProbeFacts::default()
                    }),
                    Answer::Unauthorized => ProbeOutcome::Unauthorized,
                    Answer::Throttled(s) => ProbeOutcome::Throttled {
                        retry_after: s.map(Duration::from_secs),
                    },
                    Answer::Failed => ProbeOutcome::Failed,
                };
                // Whether the engine still waits for this answer (not timed out).
                let in_flight = d.engine.probes().is_some_and(|s| s.is_in_flight(p.id));
                d.answer_probe(ProbeAnswer { id: p.id, outcome })
                    .map_err(|v| v.0)?;
                let log = logs
                    .entry((p.key.clone(), provider_of(&p.platforms[0].0)))
                    .or_default();
                if !in_flight {
                    continue;
                }
                match a {
                    Answer::Valid(_) => log.failures = 0,
                    Answer::Unauthorized => {
                        log.failures = 0;
                        SEEN[1].fetch_add(1, Ordering::Relaxed);
                        for (platform, _) in &p.platforms {
                            revoked.insert((p.key.clone(), platform.clone()));
                        }
                    }
                    Answer::Throttled(s) => {
                        SEEN[2].fetch_add(1, Ordering::Relaxed);
                        log.failures += 1;
                        log.failed_at = Some((d.now(), *s));
                    }
                    Answer::Failed => {
                        SEEN[3].fetch_add(1, Ordering::Relaxed);
                        log.failures += 1;
                        log.failed_at = Some((d.now(), None));
                    }
                }
            }
        }
        // Every probe given out by this step.
        for (now, p) in d.take_probes_at() {
            SEEN[0].fetch_add(1, Ordering::Relaxed);
            let log = logs
                .entry((p.key.clone(), provider_of(&p.platforms[0].0)))
                .or_default();
            if let Some(last) = log.last_sent
                && now.saturating_since(last) < config.min_interval
            {
                return Err(format!(
                    "a key probed again {:?} after",
                    now.saturating_since(last)
                ));
            }
            if let (n, Some((at, retry))) = (log.failures, log.failed_at)
                && n > 0
            {
                let base = config.backoff.saturating_mul(1 << (n - 1).min(20));
                let mut wait = base.min(config.max_backoff);
                if let Some(s) = retry {
                    wait = wait.max(Duration::from_secs(s).min(config.max_backoff));
                }
                if now.saturating_since(at) < wait {
                    return Err(format!(
                        "probed {:?} after failure {n}, backoff {wait:?}",
                        now.saturating_since(at)
                    ));
                }
            }
            log.last_sent = Some(now);
            sent.push(now);
            pending.push(p);
        }
        // Answers not given in time fail the probe: forget those.
        pending.retain(|p| d.engine.probes().is_some_and(|s| s.is_in_flight(p.id)));
        let in_flight = d.engine.probes().map_or(0, |s| s.in_flight());
        if in_flight > r.max_in_flight {
            return Err(format!("{in_flight} probes in flight"));
        }
    }
    for (i, t) in sent.iter().enumerate() {
        let n = sent[i..]
            .iter()
            .take_while(|u| u.as_millis() < t.as_millis() + 1000)
            .count();
        if n > r.max_per_second as usize {
            return Err(format!("{n} probes within a second of {t}"));
        }
    }
    Ok(())
}

#[test]
fn probes_keep_to_the_rate_the_in_flight_cap_the_minimum_interval_and_the_backoff() {
    fn prop(r: Run) -> TestResult {
        match run(&r) {
            Ok(()) => TestResult::passed(),
            Err(e) => TestResult::error(e),
        }
    }
    QuickCheck::new()
        .rng(Gen::new(80))
        .tests(300)
        .quickcheck(prop as fn(Run) -> TestResult);
    let seen: Vec<u64> = SEEN.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    assert!(
        seen.iter().all(|&n| n > 0),
        "probes, 401s, throttles, failures: {seen:?}"
    );
}
