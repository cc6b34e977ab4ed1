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
use crate::pool::{Assignment, Expired, Invalidated, KeyPool, Published};
use crate::protocol::{
    Announce, ErrorCode, Id, Rejected, Reply, ReplyTo, Request, decode_announce, decode_request,
};
use crate::time::Timestamp;
use rand_core::Rng;
use std::collections::{BTreeMap, VecDeque};

mod config;
mod events;
mod held;
mod stats;
#[cfg(test)]
mod tests;

pub use config::EngineConfig;
pub use events::{Event, KeyEvent, Transmit};
pub use stats::Stats;

use held::Held;

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
