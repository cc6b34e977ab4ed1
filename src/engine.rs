//! [`Engine`]: the orchestrator as a sans-IO state machine.
//!
//! Feed it what arrives with [`Engine::handle`] (the current wall-clock time, the
//! channel, the payload); then drain [`Engine::poll_transmit`] for what to publish
//! and [`Engine::poll_event`] for what to log; call [`Engine::handle_timeout`] when
//! the time from [`Engine::poll_timeout`] has come; stop once
//! [`Engine::is_shutdown`] is true. The engine never reads a clock, never draws
//! from a global RNG and never does I/O, so a test or a simulation drives it
//! exactly as the service does.
//!
//! Bad input of any kind (not JSON, wrong types, unknown types, missing fields,
//! oversized payloads) changes no state: it is reported as an [`Event::Rejected`]
//! and, when the sender waits for an answer and can be addressed, answered with an
//! `error` reply so that it does not wait in vain.

use crate::mask::Masked;
use crate::pool::{Assignment, Expired, Invalidated, KeyPool, Published, Selection};
use crate::protocol::{
    Announce, Channels, DEFAULT_MAX_PAYLOAD, DecodeError, ErrorCode, Id, Rejected, Reply, ReplyTo,
    Request, decode_announce, decode_request,
};
use crate::time::Timestamp;
use rand_core::Rng;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// How an [`Engine`] is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// The ids of the request channels (Augur's by default).
    pub channels: Channels,
    /// The largest payload handled; larger ones are rejected unread.
    pub max_payload: usize,
    /// How keys are chosen among the fresh ones.
    pub selection: Selection,
    /// The longest a NEW that asks to be held (`hold_ms`, ext) is held.
    pub max_hold: Duration,
    /// The most NEW requests held at once; beyond it they get `{"wait": n}` at once.
    pub max_held: usize,
    /// The furthest ahead an EXPIRE may park a key: a later refresh time (a
    /// wrong header, a bad client) is cut to `now + max_expiry`, so that no key
    /// is lost for years. One day and an hour by default (daily quotas).
    pub max_expiry: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            channels: Channels::default(),
            max_payload: DEFAULT_MAX_PAYLOAD,
            selection: Selection::Uniform,
            max_hold: Duration::from_secs(60),
            max_held: 10_000,
            max_expiry: Duration::from_secs(25 * 3600),
        }
    }
}

/// A NEW held until a key of its platform is fresh, or until `until`.
#[derive(Debug, Clone)]
struct Held {
    dest: String,
    requester_id: Id,
    request_id: Option<Id>,
    until: Timestamp,
}

/// A payload to publish on a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to publish it.
    pub channel: String,
    /// What to publish.
    pub payload: Vec<u8>,
}

/// Something worth logging. No event text contains a whole key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message was dropped (and, if its sender could be addressed, answered
    /// with an error).
    Rejected {
        /// The channel it came on.
        channel: String,
        /// Why.
        error: DecodeError,
    },
    /// A message came on a channel the engine does not serve.
    UnknownChannel {
        /// The channel.
        channel: String,
    },
    /// A key changed state, or a request could not be served; `key` is masked.
    Key {
        /// The platform.
        platform: String,
        /// The masked key.
        key: String,
        /// What happened.
        what: KeyEvent,
    },
    /// A NEW named a platform that no key was ever published to.
    UnknownPlatform {
        /// The platform.
        platform: String,
    },
    /// SHUTDOWN was received; the engine handles nothing more.
    Shutdown,
}

/// What happened to a key, in an [`Event::Key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEvent {
    /// Published as a new key.
    Published,
    /// Published while invalid: fresh again.
    Revived,
    /// Removed from its platform.
    Unpublished,
    /// Rate limited until the given time.
    Expired(Timestamp),
    /// Permanently invalid.
    Invalidated,
}

/// Counters of what the engine did, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Messages decoded and handled.
    pub handled: u64,
    /// Messages rejected as malformed, oversized or unknown.
    pub rejected: u64,
    /// Keys handed out.
    pub assigned: u64,
    /// `wait` replies sent.
    pub waits: u64,
    /// Error replies sent.
    pub errors: u64,
    /// NEW requests held for a key (ext `hold_ms`).
    pub held: u64,
    /// Changes of the pool's state (publish, unpublish, expire, invalidate);
    /// when it moves, the state is worth saving.
    pub changes: u64,
}

/// The orchestrator's state machine. See the [module docs](self).
#[derive(Debug)]
pub struct Engine<R> {
    pool: KeyPool,
    config: EngineConfig,
    rng: R,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    shutdown: bool,
    stats: Stats,
    /// Held NEW requests per platform, oldest first.
    held: BTreeMap<String, VecDeque<Held>>,
    held_count: usize,
    /// The earliest `until` of the held requests.
    next_hold_expiry: Option<Timestamp>,
}

impl<R: Rng> Engine<R> {
    /// An engine with an empty pool, drawing randomness from `rng`.
    pub fn new(config: EngineConfig, rng: R) -> Self {
        Self::with_pool(KeyPool::with_selection(config.selection), config, rng)
    }

    /// An engine over an existing pool (for example one restored from storage).
    pub fn with_pool(pool: KeyPool, config: EngineConfig, rng: R) -> Self {
        Self {
            pool,
            config,
            rng,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            shutdown: false,
            stats: Stats::default(),
            held: BTreeMap::new(),
            held_count: 0,
            next_hold_expiry: None,
        }
    }

    /// How many NEW requests are held waiting for a key.
    pub fn held(&self) -> usize {
        self.held_count
    }

    /// The pool, for inspection.
    pub fn pool(&self) -> &KeyPool {
        &self.pool
    }

    /// The pool, to change it directly (an embedding program's admin path).
    pub fn pool_mut(&mut self) -> &mut KeyPool {
        &mut self.pool
    }

    /// Replaces the pool with the state `snapshot` describes (for example the
    /// one saved before a restart). Held requests are kept.
    pub fn restore(&mut self, snapshot: &crate::pool::PoolSnapshot) {
        self.pool = KeyPool::from_snapshot(snapshot, self.config.selection);
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// What the engine has done so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether SHUTDOWN was handled. Once true, input is ignored; drain the
    /// transmits still queued, then stop.
    pub fn is_shutdown(&self) -> bool {
        self.shutdown
    }

    /// Handles one message received on `channel` at `now`. Call
    /// [`poll_transmit`](Self::poll_transmit) and [`poll_event`](Self::poll_event)
    /// afterwards.
    pub fn handle(&mut self, now: Timestamp, channel: &str, payload: &[u8]) {
        self.handle_with_reply(now, channel, payload, None);
    }

    /// Like [`handle`](Self::handle), for transports with native request/reply:
    /// when `reply_subject` is given, the answer goes there instead of to the
    /// `{channel}-{requester_id}` channel.
    pub fn handle_with_reply(
        &mut self,
        now: Timestamp,
        channel: &str,
        payload: &[u8],
        reply_subject: Option<&str>,
    ) {
        if self.shutdown {
            return;
        }
        let max = self.config.max_payload;
        if channel == self.config.channels.request {
            match decode_request(payload, max) {
                Ok(req) => {
                    self.stats.handled += 1;
                    self.on_request(now, req, reply_subject);
                }
                Err(rej) => self.reject(channel, rej, reply_subject, false),
            }
        } else if channel == self.config.channels.announce {
            match decode_announce(payload, max) {
                Ok(msg) => {
                    self.stats.handled += 1;
                    self.on_announce(now, msg, reply_subject);
                }
                Err(rej) => self.reject(channel, rej, reply_subject, true),
            }
        } else {
            self.stats.rejected += 1;
            self.events.push_back(Event::UnknownChannel {
                channel: channel.to_string(),
            });
        }
        if self.held_count > 0 {
            self.serve_held(now, false);
        }
    }

    /// Refreshes the keys whose refresh time has come. Call it at (or after) the
    /// time [`poll_timeout`](Self::poll_timeout) gave; calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.pool.refresh_due(now);
        if self.held_count > 0 {
            self.serve_held(now, true);
        }
    }

    /// When the engine next needs [`handle_timeout`](Self::handle_timeout): the
    /// earliest refresh time of an expired key or end of a held request, or
    /// `None` if nothing is pending. Held requests are answered only through it
    /// (or the next message); refreshes of expired keys also happen lazily.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        if self.shutdown {
            return None;
        }
        match (self.pool.next_refresh(), self.next_hold_expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Answers held requests: with a key, oldest first, while the platform has a
    /// fresh key; with an error once it has no keys at all; and, when
    /// `expire` is set, with `{"wait": n}` once their hold has ended.
    fn serve_held(&mut self, now: Timestamp, expire: bool) {
        let platforms: Vec<String> = self.held.keys().cloned().collect();
        let mut changed = false;
        for platform in platforms {
            let Some(mut queue) = self.held.remove(&platform) else {
                continue;
            };
            let before = queue.len();
            while let Some(front) = queue.front() {
                let answer = match self.pool.assign(&platform, now, &mut self.rng) {
                    Assignment::Key(k) => Reply::Key(k.to_string()),
                    Assignment::Wait { .. } => break,
                    Assignment::NoKeys | Assignment::UnknownPlatform => Reply::Error {
                        code: ErrorCode::NoKeys,
                        message: format!("no usable keys for platform: {platform}"),
                    },
                };
                match answer {
                    Reply::Key(_) => self.stats.assigned += 1,
                    _ => self.stats.errors += 1,
                }
                let dest = front.dest.clone();
                let rid = front.request_id.clone();
                queue.pop_front();
                self.send(dest, &answer, rid.as_ref());
            }
            if expire {
                let next = self.pool.next_refresh_of(&platform).unwrap_or(now);
                let wait = Reply::Wait(wait_seconds(now, next));
                let mut kept = VecDeque::with_capacity(queue.len());
                for h in queue.drain(..) {
                    if h.until <= now {
                        self.stats.waits += 1;
                        self.transmits.push_back(Transmit {
                            channel: h.dest,
                            payload: wait.encode(h.request_id.as_ref()),
                        });
                    } else {
                        kept.push_back(h);
                    }
                }
                queue = kept;
            }
            if queue.len() != before {
                changed = true;
                self.held_count -= before - queue.len();
            }
            if !queue.is_empty() {
                self.held.insert(platform, queue);
            }
        }
        if changed {
            self.next_hold_expiry = self.held.values().flatten().map(|h| h.until).min();
        }
    }

    /// Holds a NEW that found no fresh key, if it asked to be held and there is
    /// room; returns whether it was held (or was a duplicate of a held one).
    fn hold(
        &mut self,
        now: Timestamp,
        platform: &str,
        dest: &str,
        reply: &ReplyTo,
        hold_ms: u64,
    ) -> bool {
        if hold_ms == 0 || self.held_count >= self.config.max_held {
            return false;
        }
        let queue = self.held.entry(platform.to_string()).or_default();
        // A request sent again (after a reconnect, or to a new native reply
        // subject) is held once, and answered where it was last sent from.
        if let Some(h) = queue.iter_mut().find(|h| {
            reply.request_id.is_some()
                && h.request_id == reply.request_id
                && h.requester_id == reply.requester_id
        }) {
            h.dest = dest.to_string();
            return true;
        }
        let hold = Duration::from_millis(hold_ms).min(self.config.max_hold);
        let until = now.saturating_add(hold);
        queue.push_back(Held {
            dest: dest.to_string(),
            requester_id: reply.requester_id.clone(),
            request_id: reply.request_id.clone(),
            until,
        });
        self.held_count += 1;
        self.stats.held += 1;
        self.next_hold_expiry = Some(self.next_hold_expiry.map_or(until, |t| t.min(until)));
        true
    }

    /// The next payload to publish, in order; `None` when there is nothing more.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event to log, in order; `None` when there is nothing more.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn reject(
        &mut self,
        channel: &str,
        rej: Rejected,
        reply_subject: Option<&str>,
        announce: bool,
    ) {
        self.stats.rejected += 1;
        if let Some(reply) = &rej.reply {
            let message = rej.error.to_string();
            let dest = self.destination(reply, reply_subject, announce);
            self.send_error(dest, reply, ErrorCode::BadRequest, message);
        }
        self.events.push_back(Event::Rejected {
            channel: channel.to_string(),
            error: rej.error,
        });
    }

    fn destination(&self, reply: &ReplyTo, reply_subject: Option<&str>, announce: bool) -> String {
        match reply_subject {
            Some(s) => s.to_string(),
            None if announce => self.config.channels.announce_reply(&reply.requester_id),
            None => self.config.channels.request_reply(&reply.requester_id),
        }
    }

    fn send(&mut self, channel: String, reply: &Reply, request_id: Option<&Id>) {
        self.transmits.push_back(Transmit {
            channel,
            payload: reply.encode(request_id),
        });
    }

    fn send_error(&mut self, channel: String, reply: &ReplyTo, code: ErrorCode, message: String) {
        self.stats.errors += 1;
        self.send(
            channel,
            &Reply::Error { code, message },
            reply.request_id.as_ref(),
        );
    }

    fn key_event(&mut self, platform: &str, key: &str, what: KeyEvent) {
        self.stats.changes += 1;
        self.events.push_back(Event::Key {
            platform: platform.to_string(),
            key: Masked(key).to_string(),
            what,
        });
    }

    fn on_request(&mut self, now: Timestamp, req: Request, reply_subject: Option<&str>) {
        match req {
            Request::New {
                platform,
                reply,
                hold_ms,
            } => {
                let dest = self.destination(&reply, reply_subject, false);
                let rid = reply.request_id.as_ref();
                let answer = match self.pool.assign(&platform, now, &mut self.rng) {
                    Assignment::Key(k) => {
                        self.stats.assigned += 1;
                        Reply::Key(k.to_string())
                    }
                    Assignment::Wait { until } => {
                        if let Some(ms) = hold_ms
                            && self.hold(now, &platform, &dest, &reply, ms)
                        {
                            return;
                        }
                        self.stats.waits += 1;
                        Reply::Wait(wait_seconds(now, until))
                    }
                    Assignment::UnknownPlatform => {
                        self.events.push_back(Event::UnknownPlatform {
                            platform: platform.clone(),
                        });
                        let message = format!("unknown platform: {platform}");
                        self.send_error(dest, &reply, ErrorCode::UnknownPlatform, message);
                        return;
                    }
                    Assignment::NoKeys => {
                        let message = format!("no usable keys for platform: {platform}");
                        self.send_error(dest, &reply, ErrorCode::NoKeys, message);
                        return;
                    }
                };
                self.send(dest, &answer, rid);
            }
            Request::Expire {
                key,
                platform,
                refresh_time,
                ..
            } => {
                let refresh_time = refresh_time.min(now.saturating_add(self.config.max_expiry));
                match self.pool.expire(&platform, &key, refresh_time, now) {
                    Expired::Expired | Expired::Extended => {
                        self.key_event(&platform, &key, KeyEvent::Expired(refresh_time))
                    }
                    Expired::Unchanged => {}
                }
            }
            Request::Invalidate { key, platform, .. } => {
                if self.pool.invalidate(&platform, &key, now) == Invalidated::Invalidated {
                    self.key_event(&platform, &key, KeyEvent::Invalidated);
                }
            }
        }
    }

    fn on_announce(&mut self, now: Timestamp, msg: Announce, reply_subject: Option<&str>) {
        let dest = msg
            .reply_to()
            .map(|r| self.destination(r, reply_subject, true));
        match msg {
            Announce::Publish { key, platform } => match self.pool.publish(&platform, &key) {
                Published::Added => self.key_event(&platform, &key, KeyEvent::Published),
                Published::Revived => self.key_event(&platform, &key, KeyEvent::Revived),
                Published::Unchanged => {}
            },
            Announce::Unpublish { key, platform } => {
                if self.pool.unpublish(&platform, &key) {
                    self.key_event(&platform, &key, KeyEvent::Unpublished);
                }
            }
            Announce::Ack { reply } => self.send(
                dest.unwrap_or_default(),
                &Reply::Ack,
                reply.request_id.as_ref(),
            ),
            Announce::ListPlatforms { reply } => {
                let list = self.pool.platforms().map(str::to_string).collect();
                self.send(
                    dest.unwrap_or_default(),
                    &Reply::List(list),
                    reply.request_id.as_ref(),
                );
            }
            Announce::ListKeys { platform, reply } => {
                let answer = match self.pool.keys(&platform, now) {
                    Some(keys) => Reply::List(keys),
                    None => Reply::ListError(format!("unknown platform: {platform}")),
                };
                self.send(dest.unwrap_or_default(), &answer, reply.request_id.as_ref());
            }
            Announce::ListInvalidKeys { platform, reply } => {
                let answer = match self.pool.invalid_keys(&platform) {
                    Some(keys) => Reply::List(keys),
                    None => Reply::ListError(format!("unknown platform: {platform}")),
                };
                self.send(dest.unwrap_or_default(), &answer, reply.request_id.as_ref());
            }
            Announce::Status { reply } => {
                let status = self.pool.status(now);
                self.send(
                    dest.unwrap_or_default(),
                    &Reply::Status(status),
                    reply.request_id.as_ref(),
                );
            }
            Announce::Shutdown => {
                // Held requests get a key if one is fresh now, else the wait they
                // would have had without holding.
                if self.held_count > 0 {
                    self.serve_held(now, false);
                }
                let held = std::mem::take(&mut self.held);
                for (platform, queue) in held {
                    let next = self.pool.next_refresh_of(&platform).unwrap_or(now);
                    let wait = Reply::Wait(wait_seconds(now, next));
                    for h in queue {
                        self.stats.waits += 1;
                        self.send(h.dest, &wait, h.request_id.as_ref());
                    }
                }
                self.held_count = 0;
                self.next_hold_expiry = None;
                self.shutdown = true;
                self.events.push_back(Event::Shutdown);
            }
        }
    }
}

/// Whole seconds from `now` until `until`, rounded up, never 0.
pub fn wait_seconds(now: Timestamp, until: Timestamp) -> u64 {
    until
        .as_millis()
        .saturating_sub(now.as_millis())
        .div_ceil(1000)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ReplyMessage;
    use crate::rng::SplitMix64;

    const REQ: &str = "worker-oath-request";
    const ANN: &str = "augur-oauth-announce";

    fn engine() -> Engine<SplitMix64> {
        Engine::new(EngineConfig::default(), SplitMix64::new(42))
    }

    fn t(secs: u64) -> Timestamp {
        Timestamp::from_secs(secs)
    }

    fn drain(e: &mut Engine<SplitMix64>) -> Vec<Transmit> {
        std::iter::from_fn(|| e.poll_transmit()).collect()
    }

    fn reply_of(tx: &Transmit) -> ReplyMessage {
        Reply::decode(&tx.payload, DEFAULT_MAX_PAYLOAD).unwrap()
    }

    #[test]
    fn new_gets_a_key_on_the_requesters_channel() {
        let mut e = engine();
        e.handle(
            t(0),
            ANN,
            br#"{"type": "PUBLISH", "key_str": "ghp_1", "key_platform": "github_rest"}"#,
        );
        e.handle(
            t(0),
            REQ,
            br#"{"type": "NEW", "key_platform": "github_rest", "requester_id": 4711}"#,
        );
        let out = drain(&mut e);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].channel, "worker-oath-request-4711");
        assert_eq!(out[0].payload, br#"{"key":"ghp_1"}"#);
    }

    #[test]
    fn wait_hint_is_accurate_rounded_up_and_never_zero() {
        let mut e = engine();
        e.handle(
            t(0),
            ANN,
            br#"{"type":"PUBLISH","key_str":"k","key_platform":"p"}"#,
        );
        e.handle(t(0), REQ, br#"{"type":"EXPIRE","key_str":"k","key_platform":"p","refresh_time":100,"requester_id":1}"#);
        assert!(drain(&mut e).is_empty(), "EXPIRE gets no reply");
        e.handle(
            Timestamp::from_millis(10_500),
            REQ,
            br#"{"type":"NEW","key_platform":"p","requester_id":1}"#,
        );
        assert_eq!(reply_of(&drain(&mut e)[0]).reply, Reply::Wait(90));
        assert_eq!(wait_seconds(t(100), t(100)), 1);
        assert_eq!(wait_seconds(t(101), t(100)), 1);
        assert_eq!(e.poll_timeout(), Some(t(100)));
        e.handle_timeout(t(100));
        assert_eq!(e.poll_timeout(), None);
    }

    #[test]
    fn unknown_platform_and_no_keys_get_typed_errors() {
        let mut e = engine();
        e.handle(
            t(0),
            REQ,
            br#"{"type":"NEW","key_platform":"nope","requester_id":"a","request_id":5}"#,
        );
        let m = reply_of(&drain(&mut e)[0]);
        assert!(matches!(
            m.reply,
            Reply::Error {
                code: ErrorCode::UnknownPlatform,
                ..
            }
        ));
        assert_eq!(m.request_id, Some(Id::from(5u64)));
        e.handle(
            t(0),
            ANN,
            br#"{"type":"PUBLISH","key_str":"k","key_platform":"p"}"#,
        );
        e.handle(
            t(0),
            REQ,
            br#"{"type":"INVALIDATE","key_str":"k","key_platform":"p","requester_id":1}"#,
        );
        e.handle(
            t(0),
            REQ,
            br#"{"type":"NEW","key_platform":"p","requester_id":1}"#,
        );
        let m = reply_of(&drain(&mut e)[0]);
        assert!(matches!(
            m.reply,
            Reply::Error {
                code: ErrorCode::NoKeys,
                ..
            }
        ));
    }

    #[test]
    fn list_replies_and_ack_match_augur() {
        let mut e = engine();
        e.handle(
            t(0),
            ANN,
            br#"{"type":"PUBLISH","key_str":"k1","key_platform":"p"}"#,
        );
        e.handle(
            t(0),
            ANN,
            br#"{"type":"PUBLISH","key_str":"k2","key_platform":"p"}"#,
        );
        e.handle(
            t(0),
            REQ,
            br#"{"type":"INVALIDATE","key_str":"k2","key_platform":"p","requester_id":1}"#,
        );
        e.handle(t(0), ANN, br#"{"type": "ACK", "requester_id": 9}"#);
        e.handle(
            t(0),
            ANN,
            br#"{"type": "LIST_PLATFORMS", "requester_id": 9}"#,
        );
        e.handle(
            t(0),
            ANN,
            br#"{"type": "LIST_KEYS", "requester_id": 9, "key_platform": "p"}"#,
        );
        e.handle(
            t(0),
            ANN,
            br#"{"type": "LIST_INVALID_KEYS", "requester_id": 9, "key_platform": "p"}"#,
        );
        e.handle(
            t(0),
            ANN,
            br#"{"type": "LIST_KEYS", "requester_id": 9, "key_platform": "q"}"#,
        );
        let out = drain(&mut e);
        assert!(out.iter().all(|tx| tx.channel == "augur-oauth-announce-9"));
        let payloads: Vec<&[u8]> = out.iter().map(|tx| tx.payload.as_slice()).collect();
        assert_eq!(
            payloads,
            vec![
                &b""[..],
                br#"["p"]"#,
                br#"["k1"]"#,
                br#"["k2"]"#,
                br#"{"status":"unknown platform: q"}"#
            ]
        );
    }

    #[test]
    fn bad_input_changes_nothing_and_is_answered_only_when_addressable() {
        let mut e = engine();
        e.handle(
            t(0),
            ANN,
            br#"{"type":"PUBLISH","key_str":"k","key_platform":"p"}"#,
        );
        let bad: &[(&str, &[u8])] = &[
            (REQ, b"42"),
            (ANN, b"[1,2]"),
            (REQ, b"not json"),
            (REQ, br#"{"type":"NEW","key_platform":"p"}"#),
            (REQ, br#"{"type":"BOGUS","requester_id":1}"#),
            (REQ, br#"{"type":"EXPIRE","key_str":"k","key_platform":"p","refresh_time":"x","requester_id":1}"#),
            (ANN, br#"{"type":"ACK"}"#),
            (ANN, br#"{"type":"PUBLISH","key_str":5,"key_platform":"p"}"#),
            ("other-channel", b"{}"),
        ];
        for (ch, p) in bad {
            e.handle(t(0), ch, p);
        }
        assert!(drain(&mut e).is_empty());
        assert_eq!(e.stats().rejected, bad.len() as u64);
        assert_eq!(
            e.pool().state("p", "k", t(0)),
            Some(crate::pool::KeyState::Fresh)
        );
        // A NEW without platform but with an address is told what is wrong.
        e.handle(t(0), REQ, br#"{"type":"NEW","requester_id":3}"#);
        let out = drain(&mut e);
        assert_eq!(out[0].channel, "worker-oath-request-3");
        assert!(matches!(
            reply_of(&out[0]).reply,
            Reply::Error {
                code: ErrorCode::BadRequest,
                ..
            }
        ));
        // Oversized payloads are rejected unread.
        let huge = vec![b'x'; DEFAULT_MAX_PAYLOAD + 1];
        e.handle(t(0), ANN, &huge);
        assert!(matches!(
            std::iter::from_fn(|| e.poll_event()).last(),
            Some(Event::Rejected {
                error: DecodeError::TooLarge { .. },
                ..
            })
        ));
    }

    #[test]
    fn events_never_contain_a_whole_key() {
        let mut e = engine();
        let key = "ghp_supersecretsupersecret0123456789";
        let msg = format!(r#"{{"type":"PUBLISH","key_str":"{key}","key_platform":"p"}}"#);
        e.handle(t(0), ANN, msg.as_bytes());
        let msg = format!(r#"{{"type":"INVALIDATE","key_str":"{key}","key_platform":"p"}}"#);
        e.handle(t(0), REQ, msg.as_bytes());
        let events: Vec<Event> = std::iter::from_fn(|| e.poll_event()).collect();
        assert_eq!(events.len(), 2);
        for ev in events {
            assert!(!format!("{ev:?}").contains(key));
        }
    }

    #[test]
    fn shutdown_handles_what_came_before_and_nothing_after() {
        let mut e = engine();
        e.handle(
            t(0),
            ANN,
            br#"{"type":"PUBLISH","key_str":"k","key_platform":"p"}"#,
        );
        e.handle(
            t(0),
            REQ,
            br#"{"type":"NEW","key_platform":"p","requester_id":1}"#,
        );
        e.handle(t(0), ANN, br#"{"type":"SHUTDOWN"}"#);
        e.handle(
            t(0),
            REQ,
            br#"{"type":"NEW","key_platform":"p","requester_id":2}"#,
        );
        assert!(e.is_shutdown());
        let out = drain(&mut e);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].channel, "worker-oath-request-1");
    }

    #[test]
    fn native_reply_subject_takes_precedence() {
        let mut e = engine();
        e.handle(
            t(0),
            ANN,
            br#"{"type":"PUBLISH","key_str":"k","key_platform":"p"}"#,
        );
        e.handle_with_reply(
            t(0),
            REQ,
            br#"{"type":"NEW","key_platform":"p","requester_id":1}"#,
            Some("_INBOX.x"),
        );
        assert_eq!(drain(&mut e)[0].channel, "_INBOX.x");
    }

    #[test]
    fn held_requests_are_answered_when_a_key_is_published_or_refreshes() {
        let mut e = engine();
        e.handle(
            t(0),
            ANN,
            br#"{"type":"PUBLISH","key_str":"a","key_platform":"p"}"#,
        );
        e.handle(
            t(0),
            REQ,
            br#"{"type":"EXPIRE","key_str":"a","key_platform":"p","refresh_time":100}"#,
        );
        // Two held requests, and one sent twice (held once).
        e.handle(t(1), REQ, br#"{"type":"NEW","key_platform":"p","requester_id":"x","request_id":1,"hold_ms":30000}"#);
        e.handle(t(1), REQ, br#"{"type":"NEW","key_platform":"p","requester_id":"x","request_id":1,"hold_ms":30000}"#);
        e.handle(
            t(2),
            REQ,
            br#"{"type":"NEW","key_platform":"p","requester_id":"y","request_id":2,"hold_ms":500}"#,
        );
        assert!(drain(&mut e).is_empty());
        assert_eq!(e.held(), 2);
        assert_eq!(e.poll_timeout(), Some(Timestamp::from_millis(2500)));
        // y's hold ends: it gets an accurate wait.
        e.handle_timeout(Timestamp::from_millis(2500));
        let out = drain(&mut e);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].channel, "worker-oath-request-y");
        assert_eq!(reply_of(&out[0]).reply, Reply::Wait(98));
        // A publish answers x at once, with the new key.
        e.handle(
            t(3),
            ANN,
            br#"{"type":"PUBLISH","key_str":"b","key_platform":"p"}"#,
        );
        let out = drain(&mut e);
        assert_eq!(out.len(), 1);
        let m = reply_of(&out[0]);
        assert_eq!(
            (m.reply, m.request_id),
            (Reply::Key("b".into()), Some(Id::from(1u64)))
        );
        assert_eq!(e.held(), 0);
        // A refresh answers a held request when its time comes.
        e.handle(
            t(4),
            REQ,
            br#"{"type":"INVALIDATE","key_str":"b","key_platform":"p"}"#,
        );
        e.handle(
            t(5),
            REQ,
            br#"{"type":"NEW","key_platform":"p","requester_id":"z","hold_ms":200000}"#,
        );
        assert_eq!(e.poll_timeout(), Some(t(65)).min(Some(t(100))));
        e.handle_timeout(t(100));
        let out = drain(&mut e);
        assert_eq!(reply_of(&out[0]).reply, Reply::Key("a".into()));
    }

    #[test]
    fn held_requests_get_no_keys_when_the_last_key_goes_and_a_wait_on_shutdown() {
        let mut e = engine();
        e.handle(
            t(0),
            ANN,
            br#"{"type":"PUBLISH","key_str":"a","key_platform":"p"}"#,
        );
        e.handle(
            t(0),
            REQ,
            br#"{"type":"EXPIRE","key_str":"a","key_platform":"p","refresh_time":100}"#,
        );
        e.handle(
            t(1),
            REQ,
            br#"{"type":"NEW","key_platform":"p","requester_id":"x","hold_ms":30000}"#,
        );
        e.handle(
            t(2),
            REQ,
            br#"{"type":"INVALIDATE","key_str":"a","key_platform":"p"}"#,
        );
        let out = drain(&mut e);
        assert!(matches!(
            reply_of(&out[0]).reply,
            Reply::Error {
                code: ErrorCode::NoKeys,
                ..
            }
        ));
        e.handle(
            t(3),
            ANN,
            br#"{"type":"PUBLISH","key_str":"b","key_platform":"p"}"#,
        );
        e.handle(
            t(3),
            REQ,
            br#"{"type":"EXPIRE","key_str":"b","key_platform":"p","refresh_time":100}"#,
        );
        e.handle(
            t(4),
            REQ,
            br#"{"type":"NEW","key_platform":"p","requester_id":"x","hold_ms":30000}"#,
        );
        e.handle(t(5), ANN, br#"{"type":"SHUTDOWN"}"#);
        let out = drain(&mut e);
        assert_eq!(reply_of(&out[0]).reply, Reply::Wait(95));
        assert_eq!(e.poll_timeout(), None);
    }

    #[test]
    fn a_refresh_time_too_far_ahead_is_cut_to_the_longest_expiry() {
        let mut e = engine();
        e.handle(
            t(0),
            ANN,
            br#"{"type":"PUBLISH","key_str":"k","key_platform":"p"}"#,
        );
        e.handle(
            t(0),
            REQ,
            br#"{"type":"EXPIRE","key_str":"k","key_platform":"p","refresh_time":1e300}"#,
        );
        assert_eq!(e.pool().next_refresh(), Some(t(25 * 3600)));
        e.handle(
            t(25 * 3600),
            REQ,
            br#"{"type":"NEW","key_platform":"p","requester_id":1}"#,
        );
        assert_eq!(reply_of(&drain(&mut e)[0]).reply, Reply::Key("k".into()));
    }

    #[test]
    fn status_reports_counts_per_platform() {
        let mut e = engine();
        e.handle(
            t(0),
            ANN,
            br#"{"type":"PUBLISH","key_str":"a","key_platform":"p"}"#,
        );
        e.handle(
            t(0),
            ANN,
            br#"{"type":"PUBLISH","key_str":"b","key_platform":"p"}"#,
        );
        e.handle(
            t(0),
            REQ,
            br#"{"type":"EXPIRE","key_str":"a","key_platform":"p","refresh_time":50}"#,
        );
        e.handle(t(0), ANN, br#"{"type":"STATUS","requester_id":"adm"}"#);
        let m = reply_of(&drain(&mut e)[0]);
        assert_eq!(
            m.reply,
            Reply::Status(vec![crate::protocol::PlatformStatus {
                platform: "p".into(),
                fresh: 1,
                expired: 1,
                invalid: 0,
                next_refresh: Some(50)
            }])
        );
    }
}
