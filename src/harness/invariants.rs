//! The one invariant checker: the pool's consistency, and the engine's promises
//! after every input (checked by the [`Driver`](super::Driver), and so by the
//! fuzz targets and the property tests that replay operations through it).
//!
//! After a message: the pool is consistent; a rejected message changed no key;
//! one message is handled or rejected; nothing happens after SHUTDOWN; at most
//! one direct reply, and only on `{channel}-{requester_id}` for a message with a
//! usable `requester_id`, echoing its `request_id`; a key handed out is fresh
//! (never invalid, never expired before its refresh time); a `wait` hint is the
//! refresh time of an expired key (the earliest, or a later one when waits are
//! staggered) rounded up to a whole second and never 0; no event
//! shows a key; held requests are answered where they asked, with what the pool
//! holds. After a timer tick: it answers held requests only.

use super::KEYS;
use super::driver::Outputs;
use super::leases::{Grant, LeaseBook, Tally, check_handed_out};
pub use super::replies::check_new_reply;
use super::replies::{Asked, Expect};
use crate::engine::{Engine, Event, Stats, Transmit};
use crate::pool::{KeyPool, KeyState};
use crate::protocol::{Channels, DEFAULT_MAX_PAYLOAD, ErrorCode, Id, Reply};
use crate::time::Timestamp;
use rand_core::Rng;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

/// A broken invariant: what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Violation {}

/// `Err` with the text of `what` unless `ok`.
fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), Violation> {
    match ok {
        true => Ok(()),
        false => Err(Violation(what())),
    }
}

/// The pool's own consistency check ([`KeyPool::check_consistency`]).
pub fn check_pool(pool: &KeyPool) -> Result<(), Violation> {
    pool.check_consistency()
        .map_err(|e| Violation(format!("pool inconsistent: {e}")))
}

/// No event shows a whole key of [`KEYS`] (long enough that no other text
/// contains one by accident).
pub fn check_events(events: &[Event]) -> Result<(), Violation> {
    for ev in events {
        let text = format!("{ev:?}");
        let shown = KEYS.iter().any(|k| text.contains(k));
        ensure(!shown, || "an event shows a whole key".into())?;
    }
    Ok(())
}

/// What a check can see of the pool without changing it: the platforms, the
/// state of every key it knows of on each, the invalid keys and the next refresh
/// time of each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The platforms, in the pool's order.
    pub platforms: Vec<String>,
    /// The state of each key on each platform, platform by platform.
    pub states: Vec<Option<KeyState>>,
    /// The invalid keys of each platform.
    pub invalid: Vec<Option<Vec<String>>>,
    /// The next refresh time of each platform.
    pub next_refresh: Vec<Option<Timestamp>>,
}

impl Snapshot {
    /// The pool at `now`, looking at `keys`.
    pub fn of<'a>(pool: &KeyPool, keys: impl IntoIterator<Item = &'a str>, now: Timestamp) -> Self {
        let keys: Vec<&str> = keys.into_iter().collect();
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
}

/// A NEW the engine holds, as the checker saw it sent.
#[derive(Debug, Clone)]
struct HeldNew {
    dest: String,
    platform: String,
    request_id: Option<Id>,
    /// For a NEW with `lease`: the calls it wants.
    lease: Option<u64>,
    /// When its hold ends, on the checker's hold clock.
    until: Timestamp,
}

/// What the checker saw before an input.
#[derive(Debug)]
pub struct Before {
    shutdown: bool,
    held: usize,
    snapshot: Snapshot,
    stats: Stats,
}

/// The invariant checker of one engine: the keys it has seen, and the held
/// requests it follows to their answers.
#[derive(Debug, Clone)]
pub struct Checker {
    channels: Channels,
    keys: BTreeSet<String>,
    held: Vec<HeldNew>,
    book: LeaseBook,
    /// The hold clock: the last `now` and the reading at it. Like the
    /// engine's, it moves forward with `now` and stands still when `now`
    /// goes back, so that a hold lasts its time (the protocol's promise).
    last_now: Option<Timestamp>,
    reading: Timestamp,
}

impl Checker {
    /// A checker of an engine that serves `channels` and holds nothing yet.
    pub fn new(channels: Channels) -> Self {
        Checker {
            channels,
            keys: KEYS.iter().map(|k| k.to_string()).collect(),
            held: Vec::new(),
            book: LeaseBook::default(),
            last_now: None,
            reading: Timestamp::EPOCH,
        }
    }

    /// How many held requests the checker follows.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// What the leases it followed went through.
    pub fn tally(&self) -> Tally {
        self.book.tally()
    }

    /// Looks at the engine before an input at `now` (`payload`: the message's
    /// bytes, whose `key_str` the checker then follows too).
    pub fn before<R: Rng>(
        &mut self,
        engine: &Engine<R>,
        now: Timestamp,
        payload: Option<&[u8]>,
    ) -> Before {
        self.reading = match self.last_now {
            None => now,
            Some(last) => self.reading.saturating_add(now.saturating_since(last)),
        };
        self.last_now = Some(now);
        if let Some(Value::String(k)) = payload
            .and_then(parse)
            .as_ref()
            .and_then(|m| m.get("key_str"))
        {
            self.keys.insert(k.clone());
        }
        Before {
            shutdown: engine.is_shutdown(),
            held: engine.held(),
            snapshot: self.snapshot(engine.pool(), now),
            stats: engine.stats(),
        }
    }

    fn snapshot(&self, pool: &KeyPool, now: Timestamp) -> Snapshot {
        Snapshot::of(pool, self.keys.iter().map(String::as_str), now)
    }

    /// Checks what the engine did with a message `payload` on `channel` at `now`.
    pub fn after_message<R: Rng>(
        &mut self,
        engine: &mut Engine<R>,
        before: Before,
        now: Timestamp,
        channel: &str,
        payload: &[u8],
        out: &Outputs,
    ) -> Result<(), Violation> {
        let stats = before.stats;
        let after = engine.stats();
        check_pool(engine.pool())?;
        if before.shutdown {
            ensure(stats == after, || "input after SHUTDOWN was handled".into())?;
            ensure(out.transmits.is_empty(), || "a reply after SHUTDOWN".into())?;
            return ensure(out.events.is_empty(), || "an event after SHUTDOWN".into());
        }
        ensure(
            after.handled + after.rejected == stats.handled + stats.rejected + 1,
            || {
                format!(
                    "stats went from {stats:?} to {after:?}: one message must be handled or rejected"
                )
            },
        )?;
        if after.rejected > stats.rejected {
            let mut unchanged = self.snapshot(engine.pool(), now);
            if before.held > 0 {
                // Serving held requests refreshes due keys, which no state
                // shows, and withholds those back at a reset with no calls
                // above their floor.
                unchanged
                    .next_refresh
                    .clone_from(&before.snapshot.next_refresh);
                self.forgive_withheld_at_floor(engine, now, &before.snapshot, &mut unchanged);
            }
            ensure(before.snapshot == unchanged, || {
                format!(
                    "a rejected message changed the pool: {:?} became {unchanged:?}",
                    before.snapshot
                )
            })?;
        }
        check_events(&out.events)?;

        // Replies to held requests come after the reply to this message, if any.
        let newly_held =
            usize::try_from(after.holds_total - stats.holds_total).unwrap_or(usize::MAX);
        // A held request sent again and answered now, or held afresh (its
        // old hold was over), replaces the one held: the request is answered
        // once, not once per send.
        let asked = Asked::of(&self.channels, channel, payload);
        let dest = asked.address.as_ref().map(|r| {
            if channel == self.channels.announce {
                self.channels.announce_reply(&r.requester_id)
            } else {
                self.channels.request_reply(&r.requester_id)
            }
        });
        let request_id = asked.address.as_ref().and_then(|r| r.request_id.clone());
        let mut before_held = before.held;
        if let (Some(Expect::Key { platform, .. }), Some(dest), Some(_)) =
            (&asked.expects, &dest, &request_id)
            && let Some(i) = self.held.iter().position(|h| {
                &h.dest == dest && h.request_id == request_id && &h.platform == platform
            })
        {
            let answered_here = out.transmits.iter().any(|tx| {
                &tx.channel == dest
                    && Reply::decode(&tx.payload, usize::MAX)
                        .is_ok_and(|r| r.request_id == request_id)
            });
            if newly_held > 0 || answered_here {
                self.held.remove(i);
                before_held -= 1;
            }
        }
        let released = (before_held + newly_held)
            .checked_sub(engine.held())
            .ok_or_else(|| Violation("held requests appeared from nowhere".into()))?;
        let direct = out
            .transmits
            .len()
            .checked_sub(released)
            .ok_or_else(|| Violation("released held requests were not answered".into()))?;
        ensure(direct <= 1, || {
            format!("{} replies to one message", out.transmits.len())
        })?;
        let mut grants = Vec::new();
        for tx in &out.transmits[direct..] {
            grants.extend(self.check_held_reply(engine, now, tx)?);
        }

        if newly_held > 0 {
            ensure(direct == 0, || "a held request was answered at once".into())?;
            match (&asked.expects, &dest) {
                (
                    Some(Expect::Key {
                        platform,
                        lease,
                        hold_ms,
                    }),
                    Some(dest),
                ) if newly_held == 1 => {
                    let hold =
                        Duration::from_millis(hold_ms.unwrap_or(0)).min(engine.config().max_hold);
                    self.held.push(HeldNew {
                        dest: dest.clone(),
                        platform: platform.clone(),
                        request_id: request_id.clone(),
                        lease: *lease,
                        until: self.reading.saturating_add(hold),
                    });
                }
                _ => return Err(Violation("held something that is not one NEW".into())),
            }
        } else if direct == 0
            && let Some(expects) = &asked.expects
        {
            // Unanswered only when it is a held request sent again.
            let resent = match expects {
                Expect::Key { platform, .. } => {
                    request_id.is_some()
                        && self.held.iter().any(|h| {
                            Some(&h.dest) == dest.as_ref()
                                && h.request_id == request_id
                                && &h.platform == platform
                        })
                }
                _ => false,
            };
            ensure(resent, || {
                format!("a request that expects an answer ({expects:?}) got none")
            })?;
        }
        ensure(self.held.len() == engine.held(), || {
            "held requests lost".into()
        })?;
        if let Some(tx) = out.transmits.first().filter(|_| direct == 1) {
            let (Some(expects), Some(dest)) = (&asked.expects, &dest) else {
                return Err(Violation(format!(
                    "a reply on {} to a message that asks for none",
                    tx.channel
                )));
            };
            ensure(&tx.channel == dest, || format!("a reply on {}", tx.channel))?;
            let reply = Reply::decode(&tx.payload, usize::MAX)
                .map_err(|e| Violation(format!("the engine sent an undecodable reply: {e}")))?;
            ensure(reply.request_id == request_id, || {
                format!("reply echoes request_id {:?}", reply.request_id)
            })?;
            match expects {
                Expect::Key {
                    platform,
                    lease: None,
                    ..
                } => {
                    let ends = self.book.ends_of(platform);
                    check_new_reply(engine, now, platform, &reply.reply, &ends)?;
                }
                Expect::Key {
                    platform,
                    lease: Some(want),
                    ..
                } => grants.extend(self.check_lease_reply(
                    engine,
                    now,
                    platform,
                    *want,
                    &reply.reply,
                )?),
                Expect::Ok => ensure(reply.reply == Reply::Ok, || {
                    format!("a REPORT answered {:?}", reply.reply)
                })?,
                Expect::Error => ensure(
                    matches!(
                        reply.reply,
                        Reply::Error {
                            code: ErrorCode::BadRequest | ErrorCode::TooLarge,
                            ..
                        }
                    ),
                    || format!("a rejected message answered {:?}", reply.reply),
                )?,
                Expect::Answer => {
                    if let Reply::Status(items) = &reply.reply {
                        for item in items {
                            let lent = self.book.lent_on(&item.platform);
                            ensure(item.leased.unwrap_or(0) == lent, || {
                                format!(
                                    "STATUS says {:?} calls leased, the leases lent {lent}",
                                    item.leased
                                )
                            })?;
                        }
                    }
                }
            }
        }
        self.book
            .after_step(engine, now, &grants, asked.ending.as_ref(), false)
    }

    /// Takes back into `after` the keys fresh in `before` that are withheld
    /// now because their account is at or under its floor.
    fn forgive_withheld_at_floor<R: Rng>(
        &self,
        engine: &Engine<R>,
        now: Timestamp,
        before: &Snapshot,
        after: &mut Snapshot,
    ) {
        if before.platforms != after.platforms || self.keys.is_empty() {
            return;
        }
        let keys: Vec<&String> = self.keys.iter().collect();
        for (i, (was, is)) in before
            .states
            .iter()
            .zip(after.states.iter_mut())
            .enumerate()
        {
            let (platform, key) = (&before.platforms[i / keys.len()], keys[i % keys.len()]);
            let account = engine.quotas().account_of(platform, key);
            let floor = engine.config().quota.floor(platform, &account);
            let at_floor = engine
                .quotas()
                .remaining_now(now, platform, key)
                .is_some_and(|r| r <= floor);
            if *was == Some(KeyState::Fresh)
                && matches!(is, Some(KeyState::Expired { .. }))
                && at_floor
            {
                *is = *was;
            }
        }
    }

    /// Checks what a timer tick at `now` (`fired`; else a probe's answer) did:
    /// due keys refresh, due leases end, and held requests whose key came or
    /// whose hold ended are answered, and nothing else.
    pub fn after_timeout<R: Rng>(
        &mut self,
        engine: &Engine<R>,
        before: Before,
        now: Timestamp,
        out: &Outputs,
        fired: bool,
    ) -> Result<(), Violation> {
        check_pool(engine.pool())?;
        ensure(out.transmits.len() + engine.held() == before.held, || {
            "a timer tick answers held requests only".into()
        })?;
        let mut grants = Vec::new();
        for tx in &out.transmits {
            grants.extend(self.check_held_reply(engine, now, tx)?);
        }
        check_events(&out.events)?;
        ensure(self.held.len() == engine.held(), || {
            "held requests lost".into()
        })?;
        self.book.after_step(engine, now, &grants, None, fired)
    }

    /// A reply to a NEW with `lease` for `want` calls of `platform`: a lease
    /// (returned, to be recorded), or what a NEW may get; a key alone only when
    /// leases are off.
    fn check_lease_reply<R: Rng>(
        &self,
        engine: &mut Engine<R>,
        now: Timestamp,
        platform: &str,
        want: u64,
        reply: &Reply,
    ) -> Result<Option<Grant>, Violation> {
        if let Some(grant) = Grant::from_reply(platform, want, reply) {
            self.book.check_grant(engine, now, &grant)?;
            return Ok(Some(grant));
        }
        if let Reply::Key(_) = reply {
            ensure(engine.config().quota.max_leases == 0, || {
                "a key without a lease while leases are on".into()
            })?;
        }
        let ends = self.book.ends_of(platform);
        check_new_reply(engine, now, platform, reply, &ends)?;
        Ok(None)
    }

    /// A reply to a held NEW (answered now that a key is fresh, its hold ended,
    /// its platform ran out of keys, or SHUTDOWN came) goes where the NEW asked,
    /// and matches the platform's state; a held NEW with `lease` gets a lease.
    /// Returns the lease lent, to be recorded.
    fn check_held_reply<R: Rng>(
        &mut self,
        engine: &Engine<R>,
        now: Timestamp,
        tx: &Transmit,
    ) -> Result<Option<Grant>, Violation> {
        let pool = engine.pool();
        let msg = Reply::decode(&tx.payload, usize::MAX)
            .map_err(|e| Violation(format!("the engine sent an undecodable reply: {e}")))?;
        let keys = &self.keys;
        let leases_off = engine.config().quota.max_leases == 0;
        let fresh = |h: &HeldNew, k: &str| pool.state(&h.platform, k, now) == Some(KeyState::Fresh);
        let fits = |h: &HeldNew| {
            h.dest == tx.channel
                && h.request_id == msg.request_id
                && match &msg.reply {
                    Reply::Key(k) => (h.lease.is_none() || leases_off) && fresh(h, k),
                    Reply::Lease {
                        key,
                        calls,
                        lease_id,
                        ..
                    } => {
                        // The lease's platform, as the engine lent it, tells
                        // apart requests that differ only by platform.
                        let platform_fits = engine
                            .quotas()
                            .leases()
                            .find(|(id, _)| *id == *lease_id)
                            .is_none_or(|(_, l)| l.platform == h.platform);
                        h.lease.is_some_and(|want| *calls <= want) && fresh(h, key) && platform_fits
                    }
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
                            && !keys.iter().any(|k| fresh(h, k))
                    }
                    _ => false,
                }
        };
        // Requests alike on the wire (same address, same request_id) are
        // told apart by how they are answered: a wait at the end of a hold
        // goes to the one whose hold ends first, anything else to the oldest.
        let fitting = self.held.iter().enumerate().filter(|(_, h)| fits(h));
        let chosen = match msg.reply {
            Reply::Wait(_) => fitting.min_by_key(|(i, h)| (h.until, *i)),
            _ => fitting.min_by_key(|(i, _)| *i),
        };
        let Some(i) = chosen.map(|(i, _)| i) else {
            return Err(Violation(format!(
                "a reply on {} that answers no held request: {:?} (held: {:?})",
                tx.channel, msg.reply, self.held
            )));
        };
        let h = self.held.remove(i);
        if let Some(grant) = Grant::from_reply(&h.platform, h.lease.unwrap_or(0), &msg.reply) {
            self.book.check_grant(engine, now, &grant)?;
            self.book.count_held_grant();
            return Ok(Some(grant));
        }
        match msg.reply {
            Reply::Key(k) => check_handed_out(engine, now, &h.platform, &k).map(|()| None),
            _ => Ok(None),
        }
    }
}

/// The payload as a JSON object, if it is one the engine reads.
fn parse(payload: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice(payload) {
        Ok(Value::Object(m)) if payload.len() <= DEFAULT_MAX_PAYLOAD => Some(m),
        _ => None,
    }
}
