//! Bodies of the fuzz targets in `fuzz/`, kept here so that the test suite runs
//! them too (`tests/fuzz_in_suite.rs`).
//!
//! Each function takes arbitrary bytes and panics when an invariant of the core is
//! broken: a panic is how a fuzzer (or a test) sees a finding. Nothing here is
//! meant for programs that use keyman.

use crate::engine::{Engine, EngineConfig, Stats, Transmit};
use crate::pool::{KeyPool, KeyState};
use crate::protocol::{
    Channels, DEFAULT_MAX_PAYLOAD, ErrorCode, Id, Reply, Request, decode_announce, decode_request,
};
use crate::rng::SplitMix64;
use crate::time::Timestamp;
use serde_json::{Map, Value};

/// The keys the engine driver publishes. Long enough that no masked form and no
/// other text the engine produces can contain one by accident.
pub const KEYS: [&str; 4] = [
    "ghp_fuzzKey0aaaaaaaaaaaaaaaaaa",
    "ghp_fuzzKey1bbbbbbbbbbbbbbbbbb",
    "glpat-fuzzKey2cccccccccccccccc",
    "ghp_fuzzKey3dddddddddddddddddd",
];

/// The platforms the engine driver uses.
pub const PLATFORMS: [&str; 3] = ["github_rest", "github_graphql", "gitlab_rest"];

/// The message types of both channels.
pub const TYPES: [&str; 11] = [
    "NEW",
    "EXPIRE",
    "INVALIDATE",
    "PUBLISH",
    "UNPUBLISH",
    "ACK",
    "LIST_PLATFORMS",
    "LIST_KEYS",
    "LIST_INVALID_KEYS",
    "STATUS",
    "SHUTDOWN",
];

/// The fields the protocol reads.
pub const FIELDS: [&str; 7] = [
    "type",
    "key_str",
    "key_platform",
    "requester_id",
    "request_id",
    "refresh_time",
    "hold_ms",
];

/// Where the engine driver starts its clock: 2023-11-14, in Unix epoch milliseconds.
pub const START_MILLIS: u64 = 1_700_000_000_000;

/// Decodes `data` as an announce, a request and a reply. Whatever decodes must
/// encode to bytes that decode to the same value (a request's `refresh_time`
/// travels in whole seconds, rounded up, so that field is compared rounded), and
/// every error must format.
pub fn decode_bytes(data: &[u8]) {
    let max = DEFAULT_MAX_PAYLOAD;
    match decode_announce(data, max) {
        Ok(msg) => {
            let again = decode_announce(&msg.encode(), usize::MAX);
            assert_eq!(again.as_ref().ok(), Some(&msg), "announce round trip");
        }
        Err(rej) => {
            let _ = rej.error.to_string();
        }
    }
    match decode_request(data, max) {
        Ok(msg) => {
            let once = decode_request(&msg.encode(), usize::MAX);
            assert_eq!(
                once.as_ref().ok(),
                Some(&whole_seconds(msg)),
                "request round trip"
            );
            if let Ok(once) = once {
                let twice = decode_request(&once.encode(), usize::MAX);
                assert_eq!(twice.ok(), Some(once), "request second round trip");
            }
        }
        Err(rej) => {
            let _ = rej.error.to_string();
        }
    }
    match Reply::decode(data, max) {
        Ok(msg) => {
            let bytes = msg.reply.encode(msg.request_id.as_ref());
            let again = Reply::decode(&bytes, usize::MAX);
            assert_eq!(again.ok(), Some(msg), "reply round trip");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// A request as it reads after one trip through `encode`: the refresh time in
/// whole seconds, rounded up.
fn whole_seconds(msg: Request) -> Request {
    match msg {
        Request::Expire {
            key,
            platform,
            refresh_time,
            requester_id,
        } => Request::Expire {
            key,
            platform,
            refresh_time: Timestamp::from_secs(refresh_time.as_millis().div_ceil(1000)),
            requester_id,
        },
        other => other,
    }
}

/// Reads `data` as a sequence of operations on one [`Engine`] (a time step, a
/// channel and a payload each, or a timer tick) and checks after every one:
/// the pool is consistent; a rejected message changed no key; a reply goes to
/// `{channel}-{requester_id}`, and only when the message had a usable
/// `requester_id`; a key handed out is fresh; a `wait` hint is the earliest
/// refresh time rounded up to a whole second and never 0; no event shows a key.
///
/// Most payloads are built from templates of valid messages with fuzzed fields,
/// so that the engine's deep paths are reached; the rest are raw or mutated bytes.
/// Returns what the engine did, so that a caller can see which paths were taken.
pub fn drive_engine(data: &[u8]) -> Stats {
    let mut input = Input(data);
    let mut driver = Driver::new();
    while !input.0.is_empty() {
        driver.step(&mut input);
    }
    driver.engine.stats()
}

/// The bytes still to read; reading past the end gives zeros.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
}

/// What a check can see of the pool without changing it.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    platforms: Vec<String>,
    states: Vec<Option<KeyState>>,
    invalid: Vec<Option<Vec<String>>>,
    next_refresh: Vec<Option<Timestamp>>,
}

impl Snapshot {
    fn of(pool: &KeyPool, now: Timestamp) -> Self {
        let platforms: Vec<String> = pool.platforms().map(str::to_string).collect();
        let states = platforms
            .iter()
            .flat_map(|p| KEYS.iter().map(move |k| pool.state(p, k, now)))
            .collect();
        let invalid = platforms.iter().map(|p| pool.invalid_keys(p)).collect();
        let next_refresh = platforms.iter().map(|p| pool.next_refresh_of(p)).collect();
        Snapshot {
            platforms,
            states,
            invalid,
            next_refresh,
        }
    }
}

/// A NEW the engine holds, as the driver saw it sent.
struct HeldNew {
    dest: String,
    platform: String,
    request_id: Option<Id>,
}

struct Driver {
    engine: Engine<SplitMix64>,
    channels: Channels,
    now: u64,
    held: Vec<HeldNew>,
}

impl Driver {
    fn new() -> Self {
        let config = EngineConfig::default();
        let channels = config.channels.clone();
        Driver {
            engine: Engine::new(config, SplitMix64::new(0x00F0_221E)),
            channels,
            now: START_MILLIS,
            held: Vec::new(),
        }
    }

    /// One operation: a byte `op` (bits 0-2 the channel, 3-5 the kind of
    /// payload, 6-7 the kind of time step), a byte for the time step, then what
    /// the payload needs.
    fn step(&mut self, input: &mut Input<'_>) {
        let op = input.byte();
        let arg = u64::from(input.byte());
        self.now = match (op >> 6, arg) {
            (0, _) => self.now,
            (1, _) => self.now.saturating_add(arg * 100),
            (2, 250..) => match self.engine.poll_timeout() {
                Some(t) => t.as_millis(),
                None => self.now,
            },
            (2, _) => self.now.saturating_add(arg * 1000),
            (_, ..32) => self.now.saturating_sub(arg * 100),
            _ => self.now.saturating_add(arg),
        };
        let now = Timestamp::from_millis(self.now);
        let on_request = op & 7 < 4;
        let channel = match op & 7 {
            0..=3 => self.channels.request.clone(),
            4 | 5 => self.channels.announce.clone(),
            6 => "elsewhere".to_string(),
            _ => return self.timeout(now),
        };
        let payload = match (op >> 3) & 7 {
            0..=4 => to_bytes(&template(input, on_request, self.now)),
            5 => {
                let msg = to_bytes(&template(input, on_request, self.now));
                mutate(input, msg)
            }
            6 => {
                let msg = template(input, on_request, self.now);
                to_bytes(&retype(input, msg))
            }
            _ => match usize::from(input.byte()) {
                255 => padded(to_bytes(&template(input, on_request, self.now))),
                len => input.take(len).to_vec(),
            },
        };
        self.handle(now, &channel, &payload);
    }

    fn handle(&mut self, now: Timestamp, channel: &str, payload: &[u8]) {
        let was_shutdown = self.engine.is_shutdown();
        let held_before = self.engine.held();
        let before = Snapshot::of(self.engine.pool(), now);
        let stats = self.engine.stats();
        self.engine.handle(now, channel, payload);
        let after = self.engine.stats();
        let transmits: Vec<_> = std::iter::from_fn(|| self.engine.poll_transmit()).collect();
        let events: Vec<_> = std::iter::from_fn(|| self.engine.poll_event()).collect();
        self.check_pool();

        if was_shutdown {
            assert_eq!(stats, after, "input after SHUTDOWN was handled");
            assert!(transmits.is_empty(), "a reply after SHUTDOWN");
            assert!(events.is_empty(), "an event after SHUTDOWN");
            return;
        }
        assert_eq!(
            after.handled + after.rejected,
            stats.handled + stats.rejected + 1,
            "one message must be handled or rejected"
        );
        if after.rejected > stats.rejected {
            let mut unchanged = Snapshot::of(self.engine.pool(), now);
            if held_before > 0 {
                // Serving held requests refreshes due keys, which no state shows.
                unchanged.next_refresh.clone_from(&before.next_refresh);
            }
            assert_eq!(before, unchanged, "a rejected message changed the pool");
        }
        for ev in &events {
            let text = format!("{ev:?}");
            assert!(
                !KEYS.iter().any(|k| text.contains(k)),
                "an event shows a whole key"
            );
        }

        // Replies to held requests come after the reply to this message, if any.
        let newly_held =
            usize::try_from(after.holds_total - stats.holds_total).unwrap_or(usize::MAX);
        let released = (held_before + newly_held)
            .checked_sub(self.engine.held())
            .unwrap_or_else(|| panic!("held requests appeared from nowhere"));
        let direct = transmits
            .len()
            .checked_sub(released)
            .unwrap_or_else(|| panic!("released held requests were not answered"));
        assert!(direct <= 1, "more than one reply to one message");
        for tx in &transmits[direct..] {
            self.check_held_reply(now, tx);
        }

        let parsed: Option<Map<String, Value>> = match serde_json::from_slice(payload) {
            Ok(Value::Object(m)) if payload.len() <= DEFAULT_MAX_PAYLOAD => Some(m),
            _ => None,
        };
        let served = channel == self.channels.request || channel == self.channels.announce;
        let requester = requester_of(parsed.as_ref());
        let new = match decode_request(payload, DEFAULT_MAX_PAYLOAD) {
            Ok(Request::New {
                platform, reply, ..
            }) if channel == self.channels.request => Some((platform, reply)),
            _ => None,
        };
        if newly_held > 0 {
            assert_eq!(direct, 0, "a held request was answered at once");
            match (&new, requester) {
                (Some((platform, reply)), Some(id)) if newly_held == 1 => {
                    self.held.push(HeldNew {
                        dest: format!("{channel}-{id}"),
                        platform: platform.clone(),
                        request_id: reply.request_id.clone(),
                    });
                }
                _ => panic!("held something that is not one NEW"),
            }
        }
        assert_eq!(self.held.len(), self.engine.held(), "held requests lost");
        if direct == 0 {
            return;
        }
        let tx = &transmits[0];
        match (served, requester_of(parsed.as_ref())) {
            (true, Some(id)) => assert_eq!(tx.channel, format!("{channel}-{id}"), "reply channel"),
            _ => panic!("a reply to a message without a reply address"),
        }
        if let Some((platform, _)) = new {
            self.check_new_reply(now, &platform, &tx.payload);
        }
    }

    /// A timer tick: due keys refresh, and held requests whose key came or
    /// whose hold ended are answered.
    fn timeout(&mut self, now: Timestamp) {
        let held_before = self.engine.held();
        self.engine.handle_timeout(now);
        self.check_pool();
        let transmits: Vec<_> = std::iter::from_fn(|| self.engine.poll_transmit()).collect();
        assert_eq!(
            transmits.len() + self.engine.held(),
            held_before,
            "a timer tick answers held requests only"
        );
        for tx in &transmits {
            self.check_held_reply(now, tx);
        }
        assert_eq!(self.held.len(), self.engine.held(), "held requests lost");
    }

    /// A reply to a held NEW (answered now that a key is fresh, its hold ended,
    /// its platform ran out of keys, or SHUTDOWN came) goes where the NEW asked,
    /// and matches the platform's state.
    fn check_held_reply(&mut self, now: Timestamp, tx: &Transmit) {
        let msg = match Reply::decode(&tx.payload, usize::MAX) {
            Ok(m) => m,
            Err(e) => panic!("the engine sent an undecodable reply: {e}"),
        };
        let pool = self.engine.pool();
        let fits = |h: &HeldNew| {
            h.dest == tx.channel
                && h.request_id == msg.request_id
                && match &msg.reply {
                    Reply::Key(k) => pool.state(&h.platform, k, now) == Some(KeyState::Fresh),
                    Reply::Wait(n) => {
                        let want = pool
                            .next_refresh_of(&h.platform)
                            .filter(|t| *t > now)
                            .map_or(1, |t| (t.as_millis() - now.as_millis()).div_ceil(1000));
                        *n == want
                    }
                    Reply::Error {
                        code: ErrorCode::NoKeys,
                        ..
                    } => {
                        pool.next_refresh_of(&h.platform).is_none()
                            && !KEYS
                                .iter()
                                .any(|k| pool.state(&h.platform, k, now) == Some(KeyState::Fresh))
                    }
                    _ => false,
                }
        };
        match self.held.iter().position(fits) {
            Some(i) => {
                self.held.remove(i);
            }
            None => panic!("a reply that answers no held request: {:?}", msg.reply),
        }
    }

    fn check_pool(&self) {
        if let Err(e) = self.engine.pool().check_consistency() {
            panic!("pool inconsistent: {e}");
        }
    }

    /// A reply to NEW matches the platform's state at `now`.
    fn check_new_reply(&mut self, now: Timestamp, platform: &str, payload: &[u8]) {
        let reply = match Reply::decode(payload, usize::MAX) {
            Ok(m) => m.reply,
            Err(e) => panic!("the engine sent an undecodable reply: {e}"),
        };
        let known = self.engine.pool().has_platform(platform);
        let next_refresh = self.engine.pool().next_refresh_of(platform);
        // The NEW refreshed the platform at `now`: counting refreshes nothing more.
        let counts = self.engine.counts(now, platform).unwrap_or_default();
        match reply {
            Reply::Key(k) => {
                let state = self.engine.pool().state(platform, &k, now);
                assert_eq!(state, Some(KeyState::Fresh), "handed out a key not fresh");
            }
            Reply::Wait(n) => {
                assert!(
                    counts.fresh == 0 && counts.expired > 0,
                    "wait with {counts:?}"
                );
                let until = match next_refresh {
                    Some(t) => t.as_millis(),
                    None => panic!("wait without an expired key"),
                };
                assert!(until > self.now, "wait for a refresh that is due");
                let want = (until - self.now).div_ceil(1000);
                assert!(n >= 1, "wait 0");
                assert_eq!(n, want, "wait is not the earliest refresh rounded up");
            }
            Reply::Error {
                code: ErrorCode::NoKeys,
                ..
            } => assert!(known && counts.fresh == 0 && counts.expired == 0),
            Reply::Error {
                code: ErrorCode::UnknownPlatform,
                ..
            } => assert!(!known, "unknown_platform for a known platform"),
            other => panic!("unexpected reply to NEW: {other:?}"),
        }
    }
}

/// The `requester_id` of a message, as the reply channel shows it.
fn requester_of(parsed: Option<&Map<String, Value>>) -> Option<String> {
    match parsed?.get("requester_id")? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn to_bytes(v: &Map<String, Value>) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// A message of a type this channel serves (now and then of any type), with
/// each field drawn from the input.
fn template(input: &mut Input<'_>, on_request: bool, now: u64) -> Map<String, Value> {
    let t = usize::from(input.byte());
    let kind = match (t, t % 10, on_request) {
        (255, _, _) => "SHUTDOWN",
        // Now and then a type of the other channel (or an unknown one).
        (_, 9, _) => ["NEW", "PUBLISH", "ACK", "new", ""][t / 10 % 5],
        (_, 0..=4, true) => "NEW",
        (_, 5..=7, true) => "EXPIRE",
        (_, _, true) => "INVALIDATE",
        (_, 0..=4, false) => "PUBLISH",
        (_, 5, false) => "UNPUBLISH",
        (_, 6, false) => "ACK",
        (_, 7, false) => "LIST_PLATFORMS",
        _ => ["LIST_KEYS", "LIST_INVALID_KEYS", "STATUS"][t / 10 % 3],
    };
    let mut m = Map::new();
    m.insert("type".into(), kind.into());
    let (key, platform, requester, refresh) = match kind {
        "NEW" => (false, true, true, false),
        "EXPIRE" => (true, true, true, true),
        "INVALIDATE" => (true, true, true, false),
        "PUBLISH" | "UNPUBLISH" => (true, true, false, false),
        "LIST_KEYS" | "LIST_INVALID_KEYS" => (false, true, true, false),
        "SHUTDOWN" => (false, false, false, false),
        _ => (false, false, true, false),
    };
    if key {
        m.insert("key_str".into(), pick_text(input, &KEYS).into());
    }
    if platform {
        m.insert("key_platform".into(), pick_text(input, &PLATFORMS).into());
    }
    if requester {
        let r = input.byte();
        let id: Value = match r % 4 {
            0 | 1 => u64::from(r).into(),
            2 => format!("worker-{r}").into(),
            _ => Value::from(-i64::from(r)),
        };
        m.insert("requester_id".into(), id);
        if r & 0x80 != 0 {
            m.insert("request_id".into(), u64::from(input.byte()).into());
        }
        if kind == "NEW" && r & 0x40 != 0 {
            // Up to a little over the engine's longest hold of a minute.
            m.insert("hold_ms".into(), (u64::from(input.byte()) * 250).into());
        }
    }
    if refresh {
        let r = input.byte();
        let secs = (now / 1000) as i64 + i64::from(r % 128) - 4;
        let v: Value = match r >> 7 {
            0 => secs.into(),
            _ => (secs as f64 + f64::from(r % 10) / 10.0).into(),
        };
        m.insert("refresh_time".into(), v);
    }
    m
}

/// One of `choices` (the last one about half of the time, so that some
/// platforms run out of fresh keys), or now and then a short string made of
/// input bytes.
fn pick_text(input: &mut Input<'_>, choices: &[&str]) -> String {
    let b = input.byte();
    if b < 240 {
        let n = choices.len();
        choices[(usize::from(b) % (2 * n)).min(n - 1)].to_string()
    } else {
        let len = usize::from(b % 16);
        String::from_utf8_lossy(input.take(len)).into_owned()
    }
}

/// The message with one field (a protocol field or a stray one) set to a value
/// of a type drawn from the input.
fn retype(input: &mut Input<'_>, mut m: Map<String, Value>) -> Map<String, Value> {
    let f = input.byte();
    let field = FIELDS
        .get(usize::from(f) % (FIELDS.len() + 1))
        .copied()
        .unwrap_or("extra");
    let v = input.byte();
    let value: Value = match v % 9 {
        0 => Value::Null,
        1 => Value::Bool(v & 0x10 != 0),
        2 => Value::from(-i64::from(v)),
        3 => Value::from(f64::from(v) * 1.5e17),
        4 => Value::from(u64::MAX - u64::from(v)),
        5 => Value::from(""),
        6 => Value::from(vec![Value::from(u64::from(v))]),
        7 => Value::Object(Map::new()),
        _ => Value::from(TYPES[usize::from(v) % TYPES.len()]),
    };
    if f & 0x80 != 0 {
        m.remove(field);
    } else {
        m.insert(field.to_string(), value);
    }
    m
}

/// `bytes` with one byte flipped, removed, inserted, or the tail cut off.
fn mutate(input: &mut Input<'_>, mut bytes: Vec<u8>) -> Vec<u8> {
    let how = input.byte();
    let at = usize::from(input.byte()) * bytes.len() / 256;
    let b = input.byte();
    match how % 4 {
        0 if at < bytes.len() => bytes[at] ^= b,
        1 if at < bytes.len() => {
            bytes.remove(at);
        }
        2 => bytes.insert(at, b),
        _ => bytes.truncate(at),
    }
    bytes
}

/// `bytes` padded with spaces past the payload limit.
fn padded(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.resize(DEFAULT_MAX_PAYLOAD + 1, b' ');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_reach_the_engines_deep_paths() {
        // PUBLISH a key, expire it, and ask for one: the reply is a wait.
        let mut d = Driver::new();
        // op: announce, template, no time step; type 0 -> PUBLISH; key 0; platform 0.
        d.step(&mut Input(&[0b00_000_100, 0, 0, 0, 0]));
        // op: request; type 5 -> EXPIRE; key 0; platform 0; requester 4;
        // refresh byte 64 -> 60 s after now.
        d.step(&mut Input(&[0b00_000_000, 0, 5, 0, 0, 4, 64]));
        // op: request; type 0 -> NEW; platform 0; requester 4.
        d.step(&mut Input(&[0b00_000_000, 0, 0, 0, 4]));
        assert_eq!(d.engine.stats().waits, 1);
        assert_eq!(d.engine.stats().rejected, 0);
        // Jump to the refresh time: the next NEW gets the key.
        d.step(&mut Input(&[0b10_000_000, 250, 0, 0, 4]));
        assert_eq!(d.engine.stats().assigned, 1);
    }

    #[test]
    fn held_requests_are_followed_to_their_answers() {
        let publish = |key: u8| [0b00_000_100, 0, 0, key, 0];
        // NEW on platform 0 from requester 68, held for 40 * 250 ms = 10 s.
        let held_new = [0b00_000_000, 0, 0, 0, 0x44, 40];
        let mut d = Driver::new();
        d.step(&mut Input(&publish(0)));
        d.step(&mut Input(&[0b00_000_000, 0, 5, 0, 0, 4, 64]));
        d.step(&mut Input(&held_new));
        assert_eq!((d.engine.stats().holds_total, d.held.len()), (1, 1));
        // Another key is published: the held request gets it.
        d.step(&mut Input(&publish(1)));
        assert_eq!((d.engine.stats().assigned, d.held.len()), (1, 0));

        let mut d = Driver::new();
        d.step(&mut Input(&publish(0)));
        d.step(&mut Input(&[0b00_000_000, 0, 5, 0, 0, 4, 64]));
        d.step(&mut Input(&held_new));
        // A timer tick at the end of the hold: the request gets a wait.
        d.step(&mut Input(&[0b10_000_111, 250]));
        assert_eq!((d.engine.stats().waits, d.held.len()), (1, 0));
    }
}
