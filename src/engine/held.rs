//! Held requests: a NEW that asked to wait (`hold_ms`, ext) for a key of its
//! platform, answered as soon as one is fresh or when its hold ends.
//!
//! They are indexed three ways, so that no operation scans them all: per
//! platform, oldest first (to answer in order); by `requester_id` and
//! `request_id` (a re-sent request is found in `O(1)`); and by the end of
//! their hold (`O(log n)` to find those that are due). Holds are timed by a
//! [`HoldClock`], which only moves forward: a wall clock stepped back does not
//! make a request wait longer.

use super::{Engine, Leased, Transmit, wait_seconds};
use crate::pool::{Assignment, Pick};
use crate::protocol::{ErrorCode, Id, Reply, ReplyTo};
use crate::time::Timestamp;
use rand_core::Rng;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// A monotonic clock made of the wall-clock `now`s an engine is given: it
/// advances by the time between two of them when the later is later, and
/// stands still when `now` goes back. A hold measured on it lasts its time
/// however the wall clock is stepped back (a step forward may end it early,
/// which answers the request sooner; it never hangs).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct HoldClock {
    /// The last wall-clock `now` seen, and the reading at it.
    last: Option<(Timestamp, Timestamp)>,
}

impl HoldClock {
    /// Takes `now` into account and returns the reading at it. The first
    /// reading is the first `now`; as long as the wall clock only goes
    /// forward, readings equal it.
    pub(super) fn observe(&mut self, now: Timestamp) -> Timestamp {
        let reading = match self.last {
            None => now,
            Some((wall, reading)) => reading.saturating_add(now.saturating_since(wall)),
        };
        self.last = Some((now, reading));
        reading
    }

    /// The wall-clock time, on the clock of the last `now`, at which the
    /// reading `at` comes (the last `now` if it has come).
    pub(super) fn wall_time_of(&self, at: Timestamp) -> Timestamp {
        match self.last {
            None => at,
            Some((wall, reading)) => wall.saturating_add(at.saturating_since(reading)),
        }
    }
}

/// A NEW held until a key of its platform is fresh, or until `until`.
#[derive(Debug, Clone)]
pub(super) struct Held {
    pub(super) platform: String,
    pub(super) dest: String,
    pub(super) requester_id: Id,
    pub(super) request_id: Option<Id>,
    /// The end of its hold, on the [`HoldClock`].
    pub(super) until: Timestamp,
    /// For a NEW with `lease` (quota extension): the calls it wants.
    pub(super) lease: Option<u64>,
}

/// The held requests and their indexes.
#[derive(Debug, Default)]
pub(super) struct HeldRequests {
    /// The next sequence number: the order of arrival.
    next: u64,
    entries: HashMap<u64, Held>,
    /// Per platform, the sequence numbers of its held requests, oldest first.
    by_platform: BTreeMap<String, BTreeSet<u64>>,
    /// `(requester_id, request_id, platform)` of those that carry a
    /// `request_id`.
    by_request: HashMap<(Id, Id, String), u64>,
    /// `(until, seq)`: the earliest end first.
    deadlines: BTreeSet<(Timestamp, u64)>,
    /// Per platform, what the pool and the held requests were when a release
    /// last left requests held (keys made fresh, changes, requests held so
    /// far, the second): until one of them moves, no more can be released
    /// (the second, for what time alone changes: a quota window that resets),
    /// so a stream of messages does not look at every held request each time.
    blocked: HashMap<String, (u64, u64, u64, u64)>,
}

impl HeldRequests {
    /// How many are held.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The earliest end of a hold, on the [`HoldClock`].
    pub(super) fn next_deadline(&self) -> Option<Timestamp> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// The platforms with held requests.
    fn platforms(&self) -> Vec<String> {
        self.by_platform.keys().cloned().collect()
    }

    /// The oldest held request of `platform`.
    fn oldest(&self, platform: &str) -> Option<u64> {
        self.by_platform.get(platform)?.first().copied()
    }

    /// The held requests of `platform`, oldest first.
    fn of_platform(&self, platform: &str) -> Vec<u64> {
        self.by_platform
            .get(platform)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The held request that `reply` re-sends, if it is held for `platform`.
    /// `O(1)`.
    fn find(&mut self, platform: &str, reply: &ReplyTo) -> Option<&mut Held> {
        let rid = reply.request_id.clone()?;
        let seq = *self
            .by_request
            .get(&(reply.requester_id.clone(), rid, platform.to_string()))?;
        self.entries
            .get_mut(&seq)
            .filter(|h| h.platform == platform)
    }

    /// Removes the held request that `reply` re-sends, if it is held for
    /// `platform`: the re-sent one was answered, and a request is answered
    /// once. `O(log n)`.
    fn forget(&mut self, platform: &str, reply: &ReplyTo) -> bool {
        let Some(rid) = reply.request_id.clone() else {
            return false;
        };
        let Some(&seq) =
            self.by_request
                .get(&(reply.requester_id.clone(), rid, platform.to_string()))
        else {
            return false;
        };
        if self
            .entries
            .get(&seq)
            .is_some_and(|h| h.platform == platform)
        {
            self.remove(seq).is_some()
        } else {
            false
        }
    }

    fn insert(&mut self, held: Held) {
        let seq = self.next;
        self.next += 1;
        if let Some(rid) = &held.request_id {
            let key = (
                held.requester_id.clone(),
                rid.clone(),
                held.platform.clone(),
            );
            self.by_request.insert(key, seq);
        }
        self.by_platform
            .entry(held.platform.clone())
            .or_default()
            .insert(seq);
        self.deadlines.insert((held.until, seq));
        self.entries.insert(seq, held);
    }

    /// Removes a held request from every index. `O(log n)`.
    fn remove(&mut self, seq: u64) -> Option<Held> {
        let held = self.entries.remove(&seq)?;
        if let Some(rid) = &held.request_id {
            let key = (
                held.requester_id.clone(),
                rid.clone(),
                held.platform.clone(),
            );
            if self.by_request.get(&key) == Some(&seq) {
                self.by_request.remove(&key);
            }
        }
        if let Some(seqs) = self.by_platform.get_mut(&held.platform) {
            seqs.remove(&seq);
            if seqs.is_empty() {
                self.by_platform.remove(&held.platform);
            }
        }
        self.deadlines.remove(&(held.until, seq));
        Some(held)
    }

    /// Removes the requests whose hold ended at `reading`, earliest first.
    fn take_due(&mut self, reading: Timestamp) -> Vec<Held> {
        let mut due = Vec::new();
        while let Some(&(until, seq)) = self.deadlines.first() {
            if until > reading {
                break;
            }
            match self.remove(seq) {
                Some(h) => due.push(h),
                None => {
                    self.deadlines.pop_first();
                }
            }
        }
        due
    }

    /// Removes them all, oldest first.
    fn take_all(&mut self) -> Vec<Held> {
        let mut all: Vec<(u64, Held)> = self.entries.drain().collect();
        all.sort_by_key(|(seq, _)| *seq);
        *self = HeldRequests {
            next: self.next,
            ..HeldRequests::default()
        };
        all.into_iter().map(|(_, h)| h).collect()
    }
}

impl<R: Rng> Engine<R> {
    /// Answers held requests, oldest first: with a key (or a lease) while the
    /// platform has one to give, spread over the fresh keys (see
    /// [`serve_held_of`](Self::serve_held_of)); with an error once it has no
    /// keys at all; and, when `expire` is set, those whose hold has ended
    /// with a key if one is fresh, else `{"wait": n}`.
    pub(super) fn serve_held(&mut self, now: Timestamp, expire: bool) {
        let reading = self.hold_clock.observe(now);
        for platform in self.held.platforms() {
            self.serve_held_of(now, &platform, true);
        }
        if expire {
            for h in self.held.take_due(reading) {
                let answer = match self.serve_one(now, &h, None) {
                    Some(Reply::Wait(_)) | None => {
                        let next = self.pool.next_refresh_of(&h.platform).unwrap_or(now);
                        self.stats.waits += 1;
                        Reply::Wait(wait_seconds(now, next))
                    }
                    Some(answer) => {
                        if matches!(answer, Reply::Error { .. }) {
                            self.stats.errors += 1;
                        }
                        answer
                    }
                };
                self.transmits.push_back(Transmit {
                    channel: h.dest,
                    payload: answer.encode(h.request_id.as_ref()),
                });
            }
        }
    }

    /// Answers every held request that can get a key now, without spreading
    /// (at SHUTDOWN).
    pub(super) fn serve_held_everything(&mut self, now: Timestamp) {
        self.hold_clock.observe(now);
        for platform in self.held.platforms() {
            self.serve_held_of(now, &platform, false);
        }
    }

    /// Answers the held requests of `platform` that can be answered now,
    /// oldest first. With `spread`, a release shares the keys out: while keys
    /// of the platform are still rate limited, each fresh key takes at most
    /// its share of the held plain requests (held ÷ keys, rounded up, counting
    /// the times it was handed out since it became fresh), so that a key that
    /// refreshes with many requests held does not get them all (the rest wait
    /// for the next keys to refresh); and the held lease requests share the
    /// calls the fresh keys can lend (each is granted at most the calls
    /// available ÷ the lease requests held). Without `spread` (SHUTDOWN),
    /// every request that can get a key gets one.
    pub(super) fn serve_held_of(&mut self, now: Timestamp, platform: &str, spread: bool) {
        let Some(counts) = self.pool.counts(platform, now) else {
            return;
        };
        let memo = (
            self.pool.freshened(platform),
            self.stats.changes,
            self.held.next,
            now.as_secs(),
        );
        if spread && self.held.blocked.get(platform) == Some(&memo) {
            return;
        }
        let seqs = self.held.of_platform(platform);
        let leases = seqs
            .iter()
            .filter(|&&s| self.held.entries.get(&s).is_some_and(|h| h.lease.is_some()))
            .count();
        let plain = seqs.len() - leases;
        let keys = counts.fresh + counts.expired;
        let share = (spread && counts.expired > 0 && keys > 0)
            .then(|| u32::try_from(plain.div_ceil(keys)).unwrap_or(u32::MAX));
        let calls = if spread && leases > 1 {
            self.lendable(now, platform)
                .map(|a| (a / leases as u64).max(1))
        } else {
            None
        };
        let (mut plain_blocked, mut lease_blocked) = (plain == 0, leases == 0);
        for seq in seqs {
            if plain_blocked && lease_blocked {
                break;
            }
            let Some(h) = self.held.entries.get(&seq) else {
                continue;
            };
            let is_lease = h.lease.is_some();
            if (is_lease && lease_blocked) || (!is_lease && plain_blocked) {
                continue;
            }
            let h = h.clone();
            let cap = if is_lease {
                calls
            } else {
                share.map(u64::from)
            };
            match self.serve_one(now, &h, cap) {
                Some(Reply::Wait(_)) | None => {
                    if is_lease {
                        lease_blocked = true;
                    } else {
                        plain_blocked = true;
                    }
                }
                Some(answer) => {
                    if matches!(answer, Reply::Error { .. }) {
                        self.stats.errors += 1;
                    }
                    if let Some(h) = self.held.remove(seq) {
                        self.send(h.dest, &answer, h.request_id.as_ref());
                    }
                }
            }
        }
        if self.held.oldest(platform).is_some() {
            let memo = (
                self.pool.freshened(platform),
                self.stats.changes,
                self.held.next,
                now.as_secs(),
            );
            self.held.blocked.insert(platform.to_string(), memo);
        } else {
            self.held.blocked.remove(platform);
        }
    }

    /// What held request `h` gets now: a key (plain), a lease of at most
    /// `cap` calls (lease), or an error when its platform has no keys;
    /// `Some(Reply::Wait)` or `None` when it must go on waiting. For a plain
    /// request, `cap` is the most times a key may have been handed out since it
    /// became fresh.
    fn serve_one(&mut self, now: Timestamp, h: &Held, cap: Option<u64>) -> Option<Reply> {
        let no_keys = || Reply::Error {
            code: ErrorCode::NoKeys,
            message: format!("no usable keys for platform: {}", h.platform),
        };
        if let Some(want) = h.lease {
            let want = cap.map_or(want, |c| want.min(c));
            return match self.lease(now, &h.platform, want) {
                Leased::Granted { key, lease } => Some(Reply::Lease {
                    key,
                    calls: lease.calls,
                    lease_id: lease.id,
                    lease_until: lease.until.as_secs(),
                }),
                Leased::Key(key) => Some(Reply::Key(key)),
                Leased::Wait { .. } => None,
                Leased::UnknownPlatform | Leased::NoKeys => Some(no_keys()),
            };
        }
        let cap = cap.map(|c| u32::try_from(c).unwrap_or(u32::MAX));
        match self.draw_capped(now, &h.platform, cap) {
            pick @ Pick::Key(_) => match self.pool.picked(&h.platform, pick) {
                Assignment::Key(k) => Some(Reply::Key(k.to_string())),
                _ => Some(no_keys()),
            },
            Pick::Wait(_) => None,
            // Fresh keys that have had their share are not "no keys".
            Pick::NoKeys | Pick::UnknownPlatform
                if cap.is_some()
                    && self
                        .pool
                        .counts(&h.platform, now)
                        .is_some_and(|c| c.fresh > 0) =>
            {
                None
            }
            Pick::NoKeys | Pick::UnknownPlatform => Some(no_keys()),
        }
    }

    /// Answers every held request with the `wait` it would have had without
    /// holding (at SHUTDOWN), oldest first.
    pub(super) fn release_held(&mut self, now: Timestamp) {
        for h in self.held.take_all() {
            let next = self.pool.next_refresh_of(&h.platform).unwrap_or(now);
            self.stats.waits += 1;
            self.send(
                h.dest,
                &Reply::Wait(wait_seconds(now, next)),
                h.request_id.as_ref(),
            );
        }
    }

    /// A request answered at once that was also held (sent again, and a key
    /// came fresh before the timer that would have served the held one): the
    /// held one is dropped, so the request gets one answer.
    pub(super) fn forget_resent(&mut self, platform: &str, reply: &ReplyTo) {
        self.held.forget(platform, reply);
    }

    /// Holds a NEW that found no fresh key, if it asked to be held and there is
    /// room; returns whether it was held (or was a duplicate of a held one).
    /// A lease request (`lease`: the calls it wants) is held the same way and
    /// answered with a lease.
    pub(super) fn hold(
        &mut self,
        now: Timestamp,
        platform: &str,
        dest: &str,
        reply: &ReplyTo,
        hold_ms: u64,
        lease: Option<u64>,
    ) -> bool {
        let reading = self.hold_clock.observe(now);
        if hold_ms == 0 {
            return false;
        }
        // A request sent again (after a reconnect, or to a new native reply
        // subject) is held once, and answered where it was last sent from.
        // One whose hold is over (its timer has not run yet) is replaced by
        // this one, held afresh: the request is answered once, at the end of
        // the new hold.
        match self.held.find(platform, reply) {
            Some(h) if h.until > reading => {
                h.dest = dest.to_string();
                return true;
            }
            Some(_) => {
                self.held.forget(platform, reply);
            }
            None => {}
        }
        if self.held.len() >= self.config.max_held {
            return false;
        }
        let hold = Duration::from_millis(hold_ms).min(self.config.max_hold);
        self.held.insert(Held {
            platform: platform.to_string(),
            dest: dest.to_string(),
            requester_id: reply.requester_id.clone(),
            request_id: reply.request_id.clone(),
            until: reading.saturating_add(hold),
            lease,
        });
        self.stats.holds_total += 1;
        true
    }
}
