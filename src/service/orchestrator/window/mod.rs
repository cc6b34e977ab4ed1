//! The standby's window: the recent messages on the two request channels, as
//! a sans-IO type (time is passed in), so that a standby that takes over can
//! apply the state changes and answer the requests that the orchestrator
//! before it did not answer.
//!
//! A standby feeds [`Window::observe`] with every message of its
//! subscription: the two request channels and the reply channels
//! (`{channel}-{requester_id}`, and on NATS the private reply subjects). A
//! message on a request channel is kept if it changes the state (PUBLISH,
//! UNPUBLISH, EXPIRE, INVALIDATE) or expects an answer (NEW, ACK, LIST_*,
//! STATUS); a message on a reply channel answers the oldest request still
//! pending on that channel, or the one whose `request_id` it echoes, and
//! that request is forgotten. On takeover, [`Window::take`] gives what is
//! left in arrival order.
//!
//! Replaying state changes that the old leader already applied and saved is
//! harmless but for one case. On one key (`KeyPool` in `src/pool`), PUBLISH
//! adds it or revives it from invalid and leaves a fresh or expired key as it
//! is, UNPUBLISH removes it, INVALIDATE makes a known key invalid, and EXPIRE
//! makes a fresh key expired, moves an expired one's refresh time later, and
//! is ignored for an absent or invalid key. A run of these applied twice in a
//! row leaves the key as applying it once, except when the run has an EXPIRE
//! that was ignored (the key absent or invalid) followed by a PUBLISH of that
//! key: replayed on the saved state, the EXPIRE finds the key published and
//! the key stays expired until that refresh time (or keeps the later of two
//! refresh times). That errs on the safe side (a good key held back until its
//! refresh time, never a bad key handed out) and needs both messages within
//! the few seconds of the window; the test below checks over every sequence
//! of up to five changes that nothing else differs. A SHUTDOWN is not kept: it
//! ends the orchestrator it reached, not the next.

use crate::protocol::{Announce, Channels, ReplyTo, Request, decode_announce, decode_request};
use keyman_transport::Message;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The shortest time a window keeps a message.
pub(super) const MIN_KEEP: Duration = Duration::from_secs(5);
/// How many messages a window keeps at most.
pub(super) const MAX_MESSAGES: usize = 100_000;
/// How many payload bytes a window keeps at most.
pub(super) const MAX_BYTES: usize = 64 << 20;

/// How long and how much a [`Window`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    /// Messages older than this are dropped.
    pub(super) keep: Duration,
    /// At most this many messages; the oldest go first.
    pub(super) max_messages: usize,
    /// At most this many payload bytes; the oldest go first.
    pub(super) max_bytes: usize,
}

impl Limits {
    /// The limits for a lease of `ttl`: a standby takes over within about
    /// `ttl + ttl / 3` of the last renewal, so the window keeps
    /// `max(5 s, 3 × ttl)`.
    pub(super) fn for_lease(ttl: Duration) -> Self {
        Self {
            keep: MIN_KEEP.max(ttl.saturating_mul(3)),
            max_messages: MAX_MESSAGES,
            max_bytes: MAX_BYTES,
        }
    }
}

/// A message kept in the window.
#[derive(Debug)]
struct Entry {
    at: Instant,
    message: Message,
    /// For a request: where it is answered and the `request_id` it carries.
    request: Option<(String, Option<String>)>,
}

/// What a [`Window`] has dropped without replaying it, for the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Dropped {
    /// Unanswered requests older than the window (or pushed out by its size).
    pub(super) requests_too_old: u64,
    /// State changes older than the window (or pushed out by its size).
    pub(super) changes_too_old: u64,
    /// Unanswered requests forgotten after a gap in the subscription: a reply
    /// may have been missed, and a request is never answered twice.
    pub(super) requests_after_gap: u64,
}

/// What a standby replays on takeover.
#[derive(Debug, Default)]
pub(super) struct Replay {
    /// The state changes and unanswered requests, in arrival order.
    pub(super) messages: Vec<Message>,
    /// How many of them are requests.
    pub(super) requests: usize,
    /// What was dropped while standing by.
    pub(super) dropped: Dropped,
}

/// The recent state changes and unanswered requests a standby has seen, in
/// arrival order, bounded in age, count and bytes. See the module docs.
#[derive(Debug)]
pub(super) struct Window {
    channels: Channels,
    max_payload: usize,
    limits: Limits,
    next: u64,
    entries: BTreeMap<u64, Entry>,
    /// The unanswered requests of each reply channel, oldest first.
    pending: HashMap<String, VecDeque<u64>>,
    bytes: usize,
    dropped: Dropped,
}

impl Window {
    /// An empty window for the request channels `channels`, reading payloads
    /// of up to `max_payload` bytes.
    pub(super) fn new(channels: Channels, max_payload: usize, limits: Limits) -> Self {
        Self {
            channels,
            max_payload,
            limits,
            next: 0,
            entries: BTreeMap::new(),
            pending: HashMap::new(),
            bytes: 0,
            dropped: Dropped::default(),
        }
    }

    /// The channels a standby subscribes to: the two request channels.
    pub(super) fn channels(&self) -> Vec<String> {
        vec![
            self.channels.announce.clone(),
            self.channels.request.clone(),
        ]
    }

    /// The channel prefixes a standby subscribes to: the reply channels of
    /// both request channels, and `_INBOX.`, where NATS requests are answered.
    pub(super) fn prefixes(&self) -> Vec<String> {
        vec![
            format!("{}-", self.channels.announce),
            format!("{}-", self.channels.request),
            "_INBOX.".to_owned(),
        ]
    }

    /// How many messages the window holds.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// How many of them are unanswered requests.
    pub(super) fn pending(&self) -> usize {
        self.pending.values().map(VecDeque::len).sum()
    }

    /// Takes in one message of the subscription, received at `now`.
    pub(super) fn observe(&mut self, now: Instant, message: Message) {
        self.expire(now);
        if message.channel == self.channels.announce || message.channel == self.channels.request {
            self.keep(now, message);
        } else {
            self.answered(&message);
        }
    }

    /// The subscription lost messages (the connection, or the queue): every
    /// unanswered request is forgotten, since its reply may have been among
    /// them. State changes stay.
    pub(super) fn gap(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for seq in pending.into_values().flatten() {
            if let Some(entry) = self.entries.remove(&seq) {
                self.bytes -= entry.message.payload.len();
                self.dropped.requests_after_gap += 1;
            }
        }
    }

    /// Drops what is older than the window at `now`.
    pub(super) fn expire(&mut self, now: Instant) {
        while let Some((&seq, entry)) = self.entries.first_key_value() {
            if now.saturating_duration_since(entry.at) <= self.limits.keep {
                break;
            }
            self.drop_oldest(seq);
        }
    }

    /// Everything still in the window at `now`, oldest first, and what was
    /// dropped; the window is empty afterwards.
    pub(super) fn take(&mut self, now: Instant) -> Replay {
        self.expire(now);
        let entries = std::mem::take(&mut self.entries);
        self.pending.clear();
        self.bytes = 0;
        let requests = entries.values().filter(|e| e.request.is_some()).count();
        Replay {
            messages: entries.into_values().map(|e| e.message).collect(),
            requests,
            dropped: std::mem::take(&mut self.dropped),
        }
    }

    /// Keeps a message of a request channel if it changes the state or
    /// expects an answer.
    fn keep(&mut self, now: Instant, message: Message) {
        let request = if message.channel == self.channels.announce {
            match decode_announce(&message.payload, self.max_payload) {
                Ok(Announce::Publish { .. } | Announce::Unpublish { .. }) => None,
                Ok(Announce::Shutdown) | Err(_) => return,
                Ok(announce) => match announce.reply_to() {
                    Some(reply) => Some(self.address(&message, reply, true)),
                    None => return,
                },
            }
        } else {
            match decode_request(&message.payload, self.max_payload) {
                // A REPORT changes quota views; its optional `{"ok": true}` is
                // not waited for, so it is replayed as a change.
                Ok(
                    Request::Expire { .. } | Request::Invalidate { .. } | Request::Report { .. },
                ) => None,
                Ok(Request::New { reply, .. } | Request::Lease { reply, .. }) => {
                    Some(self.address(&message, &reply, false))
                }
                Err(_) => return,
            }
        };
        let seq = self.next;
        self.next += 1;
        if let Some((address, _)) = &request {
            self.pending
                .entry(address.clone())
                .or_default()
                .push_back(seq);
        }
        self.bytes += message.payload.len();
        self.entries.insert(
            seq,
            Entry {
                at: now,
                message,
                request,
            },
        );
        while self.entries.len() > self.limits.max_messages || self.bytes > self.limits.max_bytes {
            let Some((&oldest, _)) = self.entries.first_key_value() else {
                break;
            };
            self.drop_oldest(oldest);
        }
    }

    /// Where a request is answered, and its `request_id`.
    fn address(
        &self,
        message: &Message,
        reply: &ReplyTo,
        announce: bool,
    ) -> (String, Option<String>) {
        let address = match &message.reply_to {
            Some(subject) => subject.clone(),
            None if announce => self.channels.announce_reply(&reply.requester_id),
            None => self.channels.request_reply(&reply.requester_id),
        };
        (address, reply.request_id.as_ref().map(ToString::to_string))
    }

    /// A reply on `message.channel`: forgets the request it answers, the one
    /// whose `request_id` it echoes or else the oldest without one.
    fn answered(&mut self, message: &Message) {
        let Some(waiting) = self.pending.get(&message.channel) else {
            return;
        };
        let echoed = echoed_request_id(&message.payload);
        let position = waiting.iter().position(|seq| {
            self.entries.get(seq).is_some_and(|entry| {
                entry.request.as_ref().and_then(|(_, id)| id.as_ref()) == echoed.as_ref()
            })
        });
        let Some(position) = position else {
            return;
        };
        let Some(waiting) = self.pending.get_mut(&message.channel) else {
            return;
        };
        let seq = waiting.remove(position);
        if waiting.is_empty() {
            self.pending.remove(&message.channel);
        }
        if let Some(entry) = seq.and_then(|seq| self.entries.remove(&seq)) {
            self.bytes -= entry.message.payload.len();
        }
    }

    /// Drops the entry `seq` (the oldest), counting what it was.
    fn drop_oldest(&mut self, seq: u64) {
        let Some(entry) = self.entries.remove(&seq) else {
            return;
        };
        self.bytes -= entry.message.payload.len();
        match entry.request {
            None => self.dropped.changes_too_old += 1,
            Some((address, _)) => {
                self.dropped.requests_too_old += 1;
                if let Some(waiting) = self.pending.get_mut(&address) {
                    waiting.retain(|s| *s != seq);
                    if waiting.is_empty() {
                        self.pending.remove(&address);
                    }
                }
            }
        }
    }
}

/// The `request_id` a reply echoes, as the request wrote it (a number in its
/// decimal digits, a string as is); `None` for Augur's replies.
fn echoed_request_id(payload: &[u8]) -> Option<String> {
    let start = payload.iter().position(|b| !b.is_ascii_whitespace())?;
    if payload[start] != b'{' {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    match value.get("request_id")? {
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
