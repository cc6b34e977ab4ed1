//! Property tests of the [`Engine`]: random sequences of [`Operation`]s (valid
//! messages on both channels, JSON objects made of the protocol's field names
//! with values of random types, arbitrary bytes, and the clock moving in random
//! steps) replayed through the harness's checked [`Driver`]. Whatever arrives,
//! the engine must not panic, must keep the pool consistent, must change no key
//! when it rejects a message, must answer only on `{channel}-{requester_id}`,
//! must hand out only fresh keys, must give accurate wait hints, and must never
//! show a key in an event (the harness's invariant checker). The quota
//! extension's messages (NEW with `lease`, REPORT about leases live, stale or
//! made up, PUBLISH with `account` and `limit`) come too, on engines with
//! floors, choice strategies and lease caps of their own ([`Setup`]): leases
//! lend no more than remains above the floor, and every request that asks
//! for an answer gets exactly one.

use keyman::harness::operation::{AdminKind, Field, Mutation, Requester, Val};
use keyman::harness::{
    AccountPublish, Channel, Clock, Driver, LeaseNew, LeaseRef, Message, Operation, Payload,
    Report, START_MILLIS, Setup, Strategy, TYPES,
};
use keyman::{Engine, EngineConfig, Reply, SplitMix64, Timestamp};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};
use std::sync::atomic::{AtomicU64, Ordering};

const REQ: &str = "worker-oath-request";
const ANN: &str = "augur-oauth-announce";
const START: u64 = START_MILLIS;

fn pick(g: &mut Gen, n: usize) -> usize {
    usize::from(u8::arbitrary(g)) % n
}

/// An index that [`keyman::harness::operation::pick`] maps to one of `n`
/// choices, the last one half of the time.
fn index(g: &mut Gen) -> u8 {
    u8::arbitrary(g)
}

fn val(g: &mut Gen) -> Val {
    match pick(g, 14) {
        0 => Val::Null,
        1 => Val::Bool(bool::arbitrary(g)),
        2 => Val::Int(i64::arbitrary(g)),
        3 => Val::Small(u8::arbitrary(g)),
        4 => Val::Float(i32::arbitrary(g)),
        5 => Val::Text(String::arbitrary(g)),
        6 => Val::Key(index(g)),
        7 => Val::Platform(index(g)),
        8 | 9 => Val::Type(u8::arbitrary(g) % TYPES.len() as u8),
        10 => Val::Array,
        11 => Val::Huge(u8::arbitrary(g)),
        _ => Val::Object,
    }
}

fn requester(g: &mut Gen) -> Requester {
    if bool::arbitrary(g) {
        Requester::Number(u32::arbitrary(g) % 100_000)
    } else {
        Requester::Text(u8::arbitrary(g))
    }
}

/// A well-formed message of the channel (now and then of the other one).
fn message(g: &mut Gen, on_request: bool) -> Message {
    let (key, platform) = (index(g), index(g));
    let admin = |g: &mut Gen, kind| Message::Admin {
        kind,
        requester: requester(g),
        request_id: Option::<u16>::arbitrary(g),
        platform,
    };
    match (on_request, pick(g, 28)) {
        (_, 0) => message(g, !on_request),
        (true, 20..=23) => Message::Lease(LeaseNew {
            platform,
            requester: Some(requester(g)),
            request_id: Option::<u16>::arbitrary(g),
            hold: (pick(g, 4) == 0).then(|| u8::arbitrary(g)),
            want: u8::arbitrary(g) % 100 + u8::from(pick(g, 50) != 0),
        }),
        (true, 24..=27) => Message::Report(report(g, key, platform)),
        (false, 20..=27) => Message::PublishAccount(AccountPublish {
            key,
            platform,
            account: (pick(g, 4) != 0).then(|| u8::arbitrary(g)),
            limit: (pick(g, 2) == 0).then(|| u16::arbitrary(g) % 400),
        }),
        (true, 1..=9) => Message::New {
            platform,
            requester: Some(requester(g)),
            request_id: Option::<u16>::arbitrary(g),
            hold: (pick(g, 8) == 0).then(|| u8::arbitrary(g)),
        },
        (true, 10..=15) => Message::Expire {
            key,
            platform,
            requester: Some(requester(g)),
            refresh_in: (i16::from(u8::arbitrary(g) % 130) - 5) as i8,
            fractional: pick(g, 4) == 0,
        },
        (true, 16..) => Message::Invalidate {
            key,
            platform,
            requester: Some(requester(g)),
        },
        (false, 1..=9) => Message::Publish { key, platform },
        (false, 10..=11) => Message::Unpublish { key, platform },
        (false, 12) if pick(g, 50) == 0 => Message::Shutdown,
        (false, n) => {
            let kinds = [
                AdminKind::Ack,
                AdminKind::ListPlatforms,
                AdminKind::ListKeys,
                AdminKind::ListInvalidKeys,
                AdminKind::Status,
            ];
            admin(g, kinds[n % kinds.len()])
        }
    }
}

/// A REPORT about `key` of `platform`, or (mostly) about a lease.
fn report(g: &mut Gen, key: u8, platform: u8) -> Report {
    let lease = match pick(g, 10) {
        0..=5 => Some(LeaseRef::Live {
            n: u8::arbitrary(g),
            other_key: pick(g, 8) == 0,
        }),
        6 => Some(LeaseRef::Stale(u8::arbitrary(g) % 4)),
        7 => Some(LeaseRef::MadeUp(u16::arbitrary(g))),
        _ => None,
    };
    let answered = bool::arbitrary(g);
    Report {
        key,
        platform,
        lease,
        remaining: (pick(g, 5) != 0).then(|| u8::arbitrary(g)),
        limit: (pick(g, 2) == 0).then(|| u16::arbitrary(g) % 400),
        reset_in: match pick(g, 6) {
            0 => None,
            1 => Some(-(i16::from(u8::arbitrary(g)))),
            _ => Some(i16::from(u8::arbitrary(g)) * 14),
        },
        skew: (pick(g, 2) == 0).then(|| i8::arbitrary(g) / 4),
        resource: (pick(g, 8) == 0).then(|| u8::arbitrary(g)),
        used: (pick(g, 2) == 0).then(|| u8::arbitrary(g) % 120),
        done: pick(g, 3) != 0,
        requester: answered.then(|| requester(g)),
        request_id: (answered && pick(g, 4) != 0).then(|| u16::arbitrary(g)),
    }
}

/// An engine's setup: floors, strategies, a lease cap and duration.
fn setup(g: &mut Gen) -> Setup {
    let floor = |g: &mut Gen| (pick(g, 3) != 0).then(|| u8::arbitrary(g) % 40);
    let floors = [floor(g), floor(g), floor(g)];
    let strategy =
        |g: &mut Gen| (pick(g, 3) != 0).then(|| Strategy::ALL[pick(g, Strategy::ALL.len())]);
    Setup {
        floors,
        account_floor: floor(g),
        selections: [strategy(g), strategy(g), strategy(g)],
        max_leases: u8::arbitrary(g),
        lease_ttl: u8::arbitrary(g),
        no_stagger: pick(g, 4) == 0,
    }
}

/// A run: a setup and the operations replayed on it.
#[derive(Clone, Debug)]
struct Run {
    setup: Setup,
    ops: Vec<Op>,
}

impl Arbitrary for Run {
    fn arbitrary(g: &mut Gen) -> Self {
        Run {
            setup: setup(g),
            ops: Vec::arbitrary(g),
        }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let setup = self.setup;
        Box::new(self.ops.shrink().map(move |ops| Run { setup, ops }))
    }
}

/// One operation, as the property generates it (`quickcheck` cannot be
/// implemented on the harness's type here).
#[derive(Clone, Debug)]
struct Op(Operation);

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        let op = match pick(g, 40) {
            // The clock, about as often as a message.
            0..=3 => Operation::Clock(Clock::Millis(u16::arbitrary(g) % 999 + 1)),
            4..=9 => Operation::Clock(Clock::Seconds(u8::arbitrary(g) % 60 + 1)),
            10 => Operation::Clock(Clock::Minutes(u8::arbitrary(g) % 60 + 1)),
            11 | 12 => Operation::Clock(Clock::Back(u16::arbitrary(g) % 10_000 + 1)),
            13 => Operation::Clock(Clock::Step),
            14 => Operation::Clock(Clock::Tick),
            _ => {
                let channel = match pick(g, 20) {
                    0..=9 => Channel::Request,
                    10..=18 => Channel::Announce,
                    _ => Channel::Elsewhere,
                };
                let on_request = channel == Channel::Request;
                let payload = match pick(g, 20) {
                    0..=9 => Payload::Message(message(g, on_request)),
                    10 => Payload::Retyped {
                        message: message(g, on_request),
                        field: Field::ALL[pick(g, Field::ALL.len())],
                        value: (pick(g, 4) != 0).then(|| val(g)),
                    },
                    11 => Payload::Mutated {
                        message: message(g, on_request),
                        mutation: Mutation::Flip {
                            at: u8::arbitrary(g),
                            mask: 1 << pick(g, 8),
                        },
                    },
                    12..=16 => {
                        let n = pick(g, 6);
                        let fields = (0..n)
                            .map(|_| (Field::ALL[pick(g, Field::ALL.len())], val(g)))
                            .collect();
                        Payload::Object(fields)
                    }
                    _ => Payload::Raw(Vec::<u8>::arbitrary(g)),
                };
                Operation::SendTo { channel, payload }
            }
        };
        Op(op)
    }
}

fn run(run: &Run) -> Result<(), String> {
    let ops: Vec<Operation> = run.ops.iter().map(|op| op.0.clone()).collect();
    let mut driver = Driver::with_setup(0xE9, &run.setup);
    driver.replay(&ops).map_err(|v| v.to_string())?;
    let s = driver.engine.stats();
    let t = driver.tally();
    for (counter, n) in SEEN.iter().zip([
        s.handled,
        s.rejected,
        s.assigned,
        s.waits,
        s.errors,
        t.granted,
        t.granted_held,
        t.ended_by_report,
        t.ended_at_deadline,
        t.budgets_checked,
    ]) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    Ok(())
}

/// What all runs of the property did together: handled, rejected, assigned,
/// waits, errors; leases granted, granted to held requests, ended by a
/// REPORT, ended at their deadline, and budgets checked.
static SEEN: [AtomicU64; 10] = [const { AtomicU64::new(0) }; 10];

#[test]
fn the_engine_keeps_its_promises_whatever_arrives() {
    fn prop(r: Run) -> TestResult {
        match run(&r) {
            Ok(()) => TestResult::passed(),
            Err(e) => TestResult::error(format!("{:?}: {e}", r.setup)),
        }
    }
    // The messages must reach every outcome of NEW and of a lease, not only
    // the rejections. The rarest (a lease lent to a held request) is missed
    // by about one batch of 500 runs in 25, so up to five batches run until
    // every outcome was seen; each run is checked either way.
    let mut seen = Vec::new();
    for _ in 0..5 {
        QuickCheck::new()
            .rng(Gen::new(100))
            .tests(500)
            .quickcheck(prop as fn(Run) -> TestResult);
        seen = SEEN.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        if seen.iter().all(|&n| n > 0) {
            break;
        }
    }
    assert!(
        seen.iter().all(|&n| n > 0),
        "handled, rejected, assigned, waits, errors, leases granted, granted held, \
         ended by report, ended at deadline, budgets checked: {seen:?}"
    );
}

#[test]
fn the_wait_hint_counts_whole_seconds_to_the_earliest_refresh() {
    let mut e = Engine::new(EngineConfig::default(), SplitMix64::new(1));
    let now = Timestamp::from_millis(START);
    let secs = START / 1000;
    e.handle(
        now,
        ANN,
        br#"{"type":"PUBLISH","key_str":"a","key_platform":"p"}"#,
    );
    e.handle(
        now,
        ANN,
        br#"{"type":"PUBLISH","key_str":"b","key_platform":"p"}"#,
    );
    let expire = |k: &str, at: String| {
        format!(r#"{{"type":"EXPIRE","key_str":"{k}","key_platform":"p","refresh_time":{at}}}"#)
    };
    e.handle(now, REQ, expire("a", format!("{}", secs + 30)).as_bytes());
    e.handle(now, REQ, expire("b", format!("{}.5", secs + 7)).as_bytes());
    let new = br#"{"type":"NEW","key_platform":"p","requester_id":7}"#;
    for (after_ms, want) in [(0, 8), (1, 8), (500, 7), (501, 7), (7_499, 1)] {
        e.handle(Timestamp::from_millis(START + after_ms), REQ, new);
        let tx = e.poll_transmit().unwrap();
        assert_eq!(tx.channel, "worker-oath-request-7");
        let reply = Reply::decode(&tx.payload, usize::MAX).unwrap().reply;
        assert_eq!(reply, Reply::Wait(want), "{after_ms} ms after the start");
    }
    e.handle(Timestamp::from_millis(START + 7_500), REQ, new);
    let tx = e.poll_transmit().unwrap();
    assert_eq!(tx.payload, br#"{"key":"b"}"#);
}
