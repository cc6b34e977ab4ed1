//! Property tests of the [`Engine`]: random sequences of messages on both
//! channels (valid ones, JSON objects made of the protocol's field names with
//! values of random types, and arbitrary bytes), with time moving in random steps.
//! Whatever arrives, the engine must not panic, must keep the pool consistent,
//! must change no key when it rejects a message, must answer only on
//! `{channel}-{requester_id}`, must hand out only fresh keys, must give accurate
//! wait hints, and must never show a key in an event.

use keyman::protocol::DEFAULT_MAX_PAYLOAD;
use keyman::{
    Engine, EngineConfig, ErrorCode, Id, KeyPool, KeyState, Reply, SplitMix64, Timestamp,
};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use keyman::fuzzing::{PLATFORMS, TYPES};

const REQ: &str = "worker-oath-request";
const ANN: &str = "augur-oauth-announce";
/// Long and distinct, so that finding one in a text means it was leaked.
const KEYS: [&str; 4] = [
    "ghp_propKey0aaaaaaaaaaaaaaaaaa",
    "ghp_propKey1bbbbbbbbbbbbbbbbbb",
    "glpat-propKey2cccccccccccccccc",
    "ghp_propKey3dddddddddddddddddd",
];
const FIELDS: [&str; 7] = [
    "type",
    "key_str",
    "key_platform",
    "requester_id",
    "request_id",
    "refresh_time",
    "extra",
];
const START: u64 = 1_700_000_000_000;

fn pick(g: &mut Gen, n: usize) -> usize {
    usize::from(u8::arbitrary(g)) % n
}

/// A JSON value of a random type, biased toward what the protocol's fields hold.
#[derive(Clone, Debug)]
enum Val {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Key(usize),
    Platform(usize),
    Type(usize),
    Array,
    Object,
}

impl Val {
    fn arbitrary(g: &mut Gen) -> Self {
        match pick(g, 12) {
            0 => Val::Null,
            1 => Val::Bool(bool::arbitrary(g)),
            2 => Val::Int(i64::arbitrary(g)),
            3 => Val::Int(i64::from(u8::arbitrary(g))),
            4 => Val::Float(f64::from(i32::arbitrary(g)) / 7.0),
            5 => Val::Text(String::arbitrary(g)),
            6 => Val::Key(pick(g, KEYS.len())),
            7 => Val::Platform(pick(g, PLATFORMS.len())),
            8 | 9 => Val::Type(pick(g, TYPES.len())),
            10 => Val::Array,
            _ => Val::Object,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(*b),
            Val::Int(i) => Value::from(*i),
            Val::Float(f) => Value::from(*f),
            Val::Text(s) => Value::from(s.as_str()),
            Val::Key(i) => Value::from(KEYS[*i]),
            Val::Platform(i) => Value::from(PLATFORMS[*i]),
            Val::Type(i) => Value::from(TYPES[*i]),
            Val::Array => Value::from(vec![1, 2]),
            Val::Object => Value::Object(Map::new()),
        }
    }
}

/// A requester id as Augur's clients (a number) or ours (a string) send it.
#[derive(Clone, Debug)]
enum Requester {
    Number(u32),
    Text(u8),
}

#[derive(Clone, Debug)]
enum Body {
    /// A well-formed message; `refresh_in` is seconds after now (maybe past).
    Valid {
        kind: &'static str,
        key: usize,
        platform: usize,
        requester: Requester,
        request_id: Option<u16>,
        refresh_in: i64,
        fractional: bool,
    },
    /// An object of protocol fields with values of any type.
    Object(Vec<(&'static str, Val)>),
    /// Anything.
    Bytes(Vec<u8>),
}

#[derive(Clone)]
struct Msg {
    /// How far the clock moves before the message, in milliseconds.
    dt: i64,
    channel: &'static str,
    body: Body,
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let payload = render(&self.body, START);
        write!(
            f,
            "+{}ms {} {}",
            self.dt,
            self.channel,
            String::from_utf8_lossy(&payload)
        )
    }
}

impl Arbitrary for Msg {
    fn arbitrary(g: &mut Gen) -> Self {
        let ms = |g: &mut Gen, max: u32| i64::from(u32::arbitrary(g) % max) + 1;
        let dt = match pick(g, 20) {
            0..=6 => 0,
            7..=10 => ms(g, 999),
            11..=16 => ms(g, 60) * 1000,
            17 => ms(g, 3_600) * 1000,
            _ => -ms(g, 10_000),
        };
        let channel = match pick(g, 20) {
            0..=9 => REQ,
            10..=18 => ANN,
            _ => "some-other-channel",
        };
        let body = match pick(g, 20) {
            0..=11 => {
                let kind = match (channel, pick(g, 20)) {
                    (_, 0) => *g.choose(&TYPES).unwrap_or(&"NEW"),
                    (REQ, 1..=9) => "NEW",
                    (REQ, 10..=15) => "EXPIRE",
                    (REQ, _) => "INVALIDATE",
                    (_, 1..=9) => "PUBLISH",
                    (_, 10..=11) => "UNPUBLISH",
                    (_, n) => TYPES[5 + n % 5],
                };
                Body::Valid {
                    kind,
                    // The last key and platform half of the time, so that some
                    // platforms run out of fresh keys.
                    key: pick(g, 2 * KEYS.len()).min(KEYS.len() - 1),
                    platform: pick(g, 2 * PLATFORMS.len()).min(PLATFORMS.len() - 1),
                    requester: if bool::arbitrary(g) {
                        Requester::Number(u32::arbitrary(g) % 100_000)
                    } else {
                        Requester::Text(u8::arbitrary(g))
                    },
                    request_id: Option::<u16>::arbitrary(g),
                    refresh_in: i64::from(u8::arbitrary(g) % 130) - 5,
                    fractional: pick(g, 4) == 0,
                }
            }
            12..=16 => {
                let n = pick(g, 6);
                Body::Object(
                    (0..n)
                        .map(|_| {
                            let field = FIELDS[pick(g, FIELDS.len())];
                            // Keys travel in `key_str` only: a key sent as a type or
                            // a platform name is not known to be one, and not masked.
                            let value = match Val::arbitrary(g) {
                                Val::Key(i) if field != "key_str" => Val::Platform(i % 3),
                                v => v,
                            };
                            (field, value)
                        })
                        .collect(),
                )
            }
            _ => Body::Bytes(Vec::<u8>::arbitrary(g)),
        };
        Msg { dt, channel, body }
    }
}

fn render(body: &Body, now: u64) -> Vec<u8> {
    match body {
        Body::Valid {
            kind,
            key,
            platform,
            requester,
            request_id,
            refresh_in,
            fractional,
        } => {
            let mut m = Map::new();
            m.insert("type".into(), Value::from(*kind));
            m.insert("key_str".into(), Value::from(KEYS[*key]));
            m.insert("key_platform".into(), Value::from(PLATFORMS[*platform]));
            let rid = match requester {
                Requester::Number(n) => Value::from(*n),
                Requester::Text(n) => Value::from(format!("worker-{n}")),
            };
            m.insert("requester_id".into(), rid);
            if let Some(r) = request_id {
                m.insert("request_id".into(), Value::from(*r));
            }
            let secs = (now / 1000) as i64 + refresh_in;
            let refresh = match fractional {
                true => Value::from(secs as f64 + 0.25),
                false => Value::from(secs),
            };
            m.insert("refresh_time".into(), refresh);
            serde_json::to_vec(&m).unwrap()
        }
        Body::Object(fields) => {
            let m: Map<String, Value> = fields
                .iter()
                .map(|(f, v)| (f.to_string(), v.to_json()))
                .collect();
            serde_json::to_vec(&m).unwrap()
        }
        Body::Bytes(b) => b.clone(),
    }
}

/// What can be seen of the pool without changing it.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    platforms: Vec<String>,
    states: Vec<Option<KeyState>>,
    invalid: Vec<Option<Vec<String>>>,
    next_refresh: Vec<Option<Timestamp>>,
}

fn snapshot(pool: &KeyPool, keys: &BTreeSet<String>, now: Timestamp) -> Snapshot {
    let platforms: Vec<String> = pool.platforms().map(str::to_string).collect();
    Snapshot {
        states: platforms
            .iter()
            .flat_map(|p| keys.iter().map(move |k| pool.state(p, k, now)))
            .collect(),
        invalid: platforms.iter().map(|p| pool.invalid_keys(p)).collect(),
        next_refresh: platforms.iter().map(|p| pool.next_refresh_of(p)).collect(),
        platforms,
    }
}

fn id_of(v: Option<&Value>) -> Option<Id> {
    match v? {
        Value::Number(n) => Some(Id::Number(n.clone())),
        Value::String(s) => Some(Id::Text(s.clone())),
        _ => None,
    }
}

fn check_new_reply(
    e: &mut Engine<SplitMix64>,
    platform: &str,
    reply: &Reply,
    now: Timestamp,
) -> Result<(), String> {
    let known = e.pool().has_platform(platform);
    let next_refresh = e.pool().next_refresh_of(platform);
    // NEW refreshed the platform at `now`: counting at `now` refreshes nothing more.
    let counts = e.counts(now, platform).unwrap_or_default();
    match reply {
        Reply::Key(k) => match e.pool().state(platform, k, now) {
            Some(KeyState::Fresh) => Ok(()),
            other => Err(format!("handed out {k} in state {other:?}")),
        },
        Reply::Wait(n) => {
            let Some(until) = next_refresh else {
                return Err(format!("wait {n} with no expired key"));
            };
            let (until, now) = (until.as_millis(), now.as_millis());
            if counts.fresh != 0 {
                return Err(format!("wait {n} while {} keys are fresh", counts.fresh));
            }
            if *n < 1 || now + n * 1000 < until || *n != (until - now).div_ceil(1000) {
                return Err(format!("wait {n} at {now} for a refresh at {until}"));
            }
            Ok(())
        }
        Reply::Error {
            code: ErrorCode::UnknownPlatform,
            ..
        } if !known => Ok(()),
        Reply::Error {
            code: ErrorCode::NoKeys,
            ..
        } if known && counts.fresh == 0 && counts.expired == 0 => Ok(()),
        Reply::Error {
            code: ErrorCode::BadRequest,
            ..
        } => Err("a NEW that decoded was answered bad_request".into()),
        other => Err(format!("NEW answered {other:?} with {counts:?}")),
    }
}

fn run(msgs: &[Msg]) -> Result<(), String> {
    let mut e = Engine::new(EngineConfig::default(), SplitMix64::new(0xE9));
    let mut keys: BTreeSet<String> = KEYS.iter().map(|k| k.to_string()).collect();
    let mut now = START;
    for (i, msg) in msgs.iter().enumerate() {
        now = now.saturating_add_signed(msg.dt);
        let t = Timestamp::from_millis(now);
        let payload = render(&msg.body, now);
        let parsed = match serde_json::from_slice::<Value>(&payload) {
            Ok(Value::Object(m)) if payload.len() <= DEFAULT_MAX_PAYLOAD => Some(m),
            _ => None,
        };
        if let Some(Value::String(k)) = parsed.as_ref().and_then(|m| m.get("key_str")) {
            keys.insert(k.clone());
        }
        let was_shutdown = e.is_shutdown();
        let before = snapshot(e.pool(), &keys, t);
        let stats = e.stats();
        e.handle(t, msg.channel, &payload);
        let after = e.stats();
        let transmits: Vec<_> = std::iter::from_fn(|| e.poll_transmit()).collect();
        let events: Vec<_> = std::iter::from_fn(|| e.poll_event()).collect();
        let fail = |what: String| Err(format!("message {i} ({msg:?}) at {now}: {what}"));

        if let Err(err) = e.pool().check_consistency() {
            return fail(format!("pool inconsistent: {err}"));
        }
        if was_shutdown {
            if stats != after || !transmits.is_empty() || !events.is_empty() {
                return fail("the engine acted after SHUTDOWN".into());
            }
            continue;
        }
        if after.handled + after.rejected != stats.handled + stats.rejected + 1 {
            return fail(format!("stats went from {stats:?} to {after:?}"));
        }
        if after.rejected > stats.rejected && before != snapshot(e.pool(), &keys, t) {
            return fail("a rejected message changed the pool".into());
        }
        for ev in &events {
            let text = format!("{ev:?}");
            if KEYS.iter().any(|k| text.contains(k)) {
                return fail("an event shows a whole key".into());
            }
        }
        if transmits.len() > 1 {
            return fail(format!("{} replies to one message", transmits.len()));
        }
        let Some(tx) = transmits.first() else {
            continue;
        };
        let fields = parsed.as_ref();
        let Some(requester) = id_of(fields.and_then(|m| m.get("requester_id"))) else {
            return fail(format!("a reply on {} without a requester_id", tx.channel));
        };
        if tx.channel != format!("{}-{requester}", msg.channel) {
            return fail(format!("a reply on {}", tx.channel));
        }
        let reply = match Reply::decode(&tx.payload, usize::MAX) {
            Ok(r) => r,
            Err(err) => return fail(format!("undecodable reply: {err}")),
        };
        if reply.request_id != id_of(fields.and_then(|m| m.get("request_id"))) {
            return fail(format!("reply echoes request_id {:?}", reply.request_id));
        }
        let new_on = |m: &Map<String, Value>| match (m.get("type"), m.get("key_platform")) {
            (Some(Value::String(t)), Some(Value::String(p))) if t == "NEW" && !p.is_empty() => {
                Some(p.clone())
            }
            _ => None,
        };
        if msg.channel == REQ
            && after.handled > stats.handled
            && let Some(platform) = fields.and_then(new_on)
            && let Err(err) = check_new_reply(&mut e, &platform, &reply.reply, t)
        {
            return fail(err);
        }
    }
    let s = e.stats();
    for (counter, n) in SEEN
        .iter()
        .zip([s.handled, s.rejected, s.assigned, s.waits, s.errors])
    {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    Ok(())
}

/// What all runs of the property did together: handled, rejected, assigned,
/// waits, errors.
static SEEN: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];

#[test]
fn the_engine_keeps_its_promises_whatever_arrives() {
    fn prop(msgs: Vec<Msg>) -> TestResult {
        match run(&msgs) {
            Ok(()) => TestResult::passed(),
            Err(e) => TestResult::error(e),
        }
    }
    QuickCheck::new()
        .rng(Gen::new(100))
        .tests(500)
        .quickcheck(prop as fn(Vec<Msg>) -> TestResult);
    // The messages reached every outcome of NEW, not only the rejections.
    let seen: Vec<u64> = SEEN.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    assert!(
        seen.iter().all(|&n| n > 0),
        "handled, rejected, assigned, waits, errors: {seen:?}"
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
