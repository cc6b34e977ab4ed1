//! [`KeyPool`]: the keys of every platform, each in exactly one state.
//!
//! A key is **fresh** (may be handed out), **expired** until a refresh time (rate
//! limited), or **invalid** (permanently bad; never handed out, never refreshed).
//! Platforms are independent pools that appear on the first publish.
//!
//! The pool does no I/O: the caller passes the current time into every operation
//! that depends on it, and the random generator into [`KeyPool::assign`].
//! Expired keys whose refresh time has come become fresh the next time their
//! platform is touched with a later `now`; [`KeyPool::refresh_due`] does it for
//! all platforms at once, and [`KeyPool::next_refresh`] says when that is next due.
//!
//! Costs are given per operation in `n`, the number of keys of the platform, and
//! `P`, the number of platforms (a handful in practice). "Refreshing `r` keys" is
//! `O(r log n)` and is paid once per key per expiry, however many operations follow.

use crate::protocol::PlatformStatus;
use crate::time::Timestamp;
use rand_core::Rng;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

mod records;
mod snapshot;
#[cfg(test)]
mod tests;

pub use records::{
    ChangedRecords, DecodedState, META_RECORD, SHARDS, STATE_FORMAT_VERSION, StateDecodeError,
    StateRecords, canonical_quotas, canonical_snapshot, check_state_decoding, decode_records,
    shard_of, shard_record_name,
};
pub use snapshot::{PlatformSnapshot, PoolSnapshot};

/// How [`KeyPool::assign`] chooses among the fresh keys of a platform.
///
/// New strategies (most remaining quota, leases with a concurrency cap) are added
/// here: the pool keeps the fresh keys in a dense array, so a strategy only has to
/// pick an index into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Selection {
    /// Uniformly at random, as Augur's orchestrator does. `O(1)`.
    #[default]
    Uniform,
    /// Each fresh key in turn. `O(1)`. The order changes when keys leave the fresh set.
    RoundRobin,
    // -- quota-aware strategies (issue 10) --
    /// The key whose account has the most calls left above its floor; keys with
    /// nothing known come first (to learn them), ties are broken uniformly at
    /// random. Without quota information ([`KeyPool::assign`]) it is
    /// [`Uniform`](Self::Uniform). `O(n)`.
    MostRemaining,
    /// At random, each key weighted by its calls left above the floor (a key
    /// with nothing known weighs as the mean of the known ones): spreads the
    /// load without a herd on one key. Uniform when nothing is known. `O(n)`.
    WeightedRemaining,
    /// The fresh key handed out the fewest times since it became fresh (was
    /// refreshed, published or revived); ties uniformly at random. Spreads
    /// workers that keep a key until it is spent (Augur's) over the fresh
    /// keys instead of piling them on one. `O(n)`.
    LeastAssigned,
}

/// What a quota-aware choice ([`KeyPool::choose`]) knows of a fresh key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    /// Nothing is known of its quota: it may be chosen.
    Unknown,
    /// This many calls are left above its floor (after the calls lent); 0
    /// means it may not be chosen now.
    Calls(u64),
}

/// The state of one key in one platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// May be handed out.
    Fresh,
    /// Rate limited; becomes fresh when the clock reaches `refresh_at`.
    Expired {
        /// The refresh time.
        refresh_at: Timestamp,
    },
    /// Permanently bad; only a publish brings it back.
    Invalid,
}

/// What [`KeyPool::assign`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment<'a> {
    /// A fresh key.
    Key(&'a str),
    /// No key is fresh; the earliest expired key refreshes at `refresh_at`.
    Wait {
        /// The earliest refresh time of the platform.
        refresh_at: Timestamp,
    },
    /// No key was ever published for this platform.
    UnknownPlatform,
    /// The platform has no fresh and no expired key (all invalid or unpublished).
    NoKeys,
}

/// What [`KeyPool::assign`] and [`KeyPool::choose`] decided, with the fresh
/// key as its place in the platform's fresh keys: it borrows nothing, so the
/// engine may do more before it reads the key ([`KeyPool::picked`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pick {
    /// The fresh key at this index.
    Key(usize),
    /// As [`Assignment::Wait`].
    Wait(Timestamp),
    /// As [`Assignment::UnknownPlatform`].
    UnknownPlatform,
    /// As [`Assignment::NoKeys`].
    NoKeys,
}

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The key is new to the platform and fresh now.
    Added,
    /// The key was invalid and is fresh again.
    Revived,
    /// The key was already fresh or expired; nothing changed (publish is idempotent,
    /// and an expired key stays expired until its refresh time).
    Unchanged,
    /// Nothing changed: the key or platform name is longer than its limit, or
    /// the key would pass a cap of the engine. Only
    /// [`Engine::publish`](crate::Engine::publish) refuses; the pool itself has
    /// no limits.
    Refused,
}

/// What an expire did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// The key was fresh and is now expired until the given time.
    Expired,
    /// The key was already expired until an earlier time; it is now expired until
    /// the later one (the later of two refresh times wins: the API said so).
    Extended,
    /// Nothing changed: the key is unknown, invalid, already expired until a later
    /// time, or the refresh time is not after `now`.
    Unchanged,
}

/// What an invalidate did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidated {
    /// The key was fresh or expired and is invalid now.
    Invalidated,
    /// The key was already invalid.
    AlreadyInvalid,
    /// The platform or the key is unknown; nothing changed.
    Unknown,
}

/// How many keys of a platform are in each state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Keys that may be handed out.
    pub fresh: usize,
    /// Rate-limited keys waiting for their refresh time.
    pub expired: usize,
    /// Permanently bad keys.
    pub invalid: usize,
}

impl Counts {
    /// All keys of the platform.
    pub fn total(&self) -> usize {
        self.fresh + self.expired + self.invalid
    }
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    /// Index into `PlatformPool::fresh`.
    Fresh(usize),
    Expired(Timestamp),
    Invalid,
}

#[derive(Debug, Default)]
struct PlatformPool {
    slots: HashMap<Arc<str>, Slot>,
    /// Dense array of the fresh keys: `O(1)` random choice and removal.
    fresh: Vec<Arc<str>>,
    /// How many times each fresh key (same index) was handed out since it
    /// became fresh.
    handouts: Vec<u32>,
    /// Expired keys ordered by refresh time: `O(log n)` refresh of the earliest.
    expired: BTreeSet<(Timestamp, Arc<str>)>,
    /// Invalid keys, ordered for stable listing.
    invalid: BTreeSet<Arc<str>>,
    /// Cursor of [`Selection::RoundRobin`].
    cursor: usize,
    /// How many times a key became fresh (published, revived, refreshed).
    freshened: u64,
}

impl PlatformPool {
    fn push_fresh(&mut self, key: Arc<str>) {
        let idx = self.fresh.len();
        self.fresh.push(key.clone());
        self.handouts.push(0);
        self.freshened += 1;
        self.slots.insert(key, Slot::Fresh(idx));
    }

    /// Removes `fresh[idx]` in `O(1)` and fixes the index of the key moved into its place.
    fn remove_fresh(&mut self, idx: usize) -> Arc<str> {
        let key = self.fresh.swap_remove(idx);
        self.handouts.swap_remove(idx);
        if let Some(slot) = self
            .fresh
            .get(idx)
            .and_then(|moved| self.slots.get_mut(moved))
        {
            *slot = Slot::Fresh(idx);
        }
        key
    }

    fn refresh(&mut self, now: Timestamp) -> usize {
        let mut n = 0;
        while let Some((until, _)) = self.expired.first() {
            if *until > now {
                break;
            }
            if let Some((_, key)) = self.expired.pop_first() {
                self.push_fresh(key);
                n += 1;
            }
        }
        n
    }

    fn earliest_refresh(&self) -> Option<Timestamp> {
        self.expired.first().map(|(t, _)| *t)
    }

    fn counts(&self) -> Counts {
        Counts {
            fresh: self.fresh.len(),
            expired: self.expired.len(),
            invalid: self.invalid.len(),
        }
    }
}

/// The keys of every platform and their states. See the [module docs](self).
#[derive(Debug, Default)]
pub struct KeyPool {
    /// Platforms in the order they were first published.
    platforms: Vec<(String, PlatformPool)>,
    index: HashMap<String, usize>,
    selection: Selection,
    /// What changed, for saving only that.
    changes: records::ChangeLog,
}

impl KeyPool {
    /// An empty pool that picks keys uniformly at random.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty pool with the given selection strategy.
    pub fn with_selection(selection: Selection) -> Self {
        Self {
            selection,
            ..Self::default()
        }
    }

    fn platform(&self, platform: &str) -> Option<&PlatformPool> {
        self.index.get(platform).map(|&i| &self.platforms[i].1)
    }

    fn platform_mut(&mut self, platform: &str) -> Option<&mut PlatformPool> {
        match self.index.get(platform) {
            Some(&i) => Some(&mut self.platforms[i].1),
            None => None,
        }
    }

    /// Adds `key` to `platform` as fresh, creating the platform on first use.
    /// Idempotent; an invalid key is revived; an expired key stays expired.
    /// `O(1)` amortized (`O(log n)` to revive an invalid key).
    pub fn publish(&mut self, platform: &str, key: &str) -> Published {
        self.ensure_platform(platform);
        let Some(pool) = self.platform_mut(platform) else {
            return Published::Unchanged;
        };
        match pool.slots.get(key).copied() {
            None => {
                pool.push_fresh(Arc::from(key));
                self.touched(platform, key);
                Published::Added
            }
            Some(Slot::Invalid) => {
                if let Some(k) = pool.invalid.take(key) {
                    pool.push_fresh(k);
                }
                self.touched(platform, key);
                Published::Revived
            }
            Some(Slot::Fresh(_) | Slot::Expired(_)) => Published::Unchanged,
        }
    }

    /// Removes `key` from `platform` whatever its state. Returns whether it was there.
    /// The platform itself stays known, even when empty. `O(1)` for a fresh key,
    /// `O(log n)` otherwise.
    pub fn unpublish(&mut self, platform: &str, key: &str) -> bool {
        let Some(pool) = self.platform_mut(platform) else {
            return false;
        };
        let removed = match pool.slots.remove(key) {
            None => false,
            Some(Slot::Fresh(idx)) => {
                pool.remove_fresh(idx);
                true
            }
            Some(Slot::Expired(until)) => {
                let k: Arc<str> = Arc::from(key);
                pool.expired.remove(&(until, k));
                true
            }
            Some(Slot::Invalid) => {
                pool.invalid.remove(key);
                true
            }
        };
        if removed {
            self.touched(platform, key);
        }
        removed
    }

    /// Hands out a fresh key of `platform` chosen by the pool's [`Selection`],
    /// after refreshing the platform's due keys. The key stays fresh (keys are
    /// shared, as in Augur). `O(1)` plus the refresh of due keys.
    pub fn assign<R: Rng + ?Sized>(
        &mut self,
        platform: &str,
        now: Timestamp,
        rng: &mut R,
    ) -> Assignment<'_> {
        let pick = self.pick(platform, now, rng);
        self.picked(platform, pick)
    }

    /// The answer that `pick` (of [`pick`](Self::pick) or
    /// [`pick_weighted`](Self::pick_weighted)) stands for, with nothing
    /// changed since.
    pub(crate) fn picked(&self, platform: &str, pick: Pick) -> Assignment<'_> {
        match pick {
            Pick::Key(idx) => match self.platform(platform).and_then(|p| p.fresh.get(idx)) {
                Some(key) => Assignment::Key(key),
                None => Assignment::NoKeys,
            },
            Pick::Wait(refresh_at) => Assignment::Wait { refresh_at },
            Pick::UnknownPlatform => Assignment::UnknownPlatform,
            Pick::NoKeys => Assignment::NoKeys,
        }
    }

    /// [`assign`](Self::assign), answering with the key's place.
    pub(crate) fn pick<R: Rng + ?Sized>(
        &mut self,
        platform: &str,
        now: Timestamp,
        rng: &mut R,
    ) -> Pick {
        let selection = self.selection;
        let Some(pool) = self.platform_mut(platform) else {
            return Pick::UnknownPlatform;
        };
        pool.refresh(now);
        let len = pool.fresh.len();
        if len == 0 {
            return match pool.earliest_refresh() {
                Some(refresh_at) => Pick::Wait(refresh_at),
                None => Pick::NoKeys,
            };
        }
        let idx = match selection {
            Selection::Uniform | Selection::MostRemaining | Selection::WeightedRemaining => {
                uniform_index(rng.next_u64(), len)
            }
            Selection::RoundRobin => {
                let i = pool.cursor % len;
                pool.cursor = i + 1;
                i
            }
            Selection::LeastAssigned => least_assigned(&pool.handouts, rng, |_| true),
        };
        pool.handouts[idx] = pool.handouts[idx].saturating_add(1);
        Pick::Key(idx)
    }

    /// Like [`assign`](Self::assign), with `selection` and what `weight` says of
    /// each fresh key's quota: keys of weight `Calls(0)` are passed over. When
    /// every fresh key may be chosen, [`Selection::Uniform`] draws exactly as
    /// `assign` does (the same key for the same generator). When fresh keys
    /// exist but none may be chosen, the answer is `Wait` until the earlier of
    /// the platform's next refresh and `fallback` (`NoKeys` if neither is known).
    /// `O(n)`.
    pub fn choose<R: Rng + ?Sized>(
        &mut self,
        platform: &str,
        now: Timestamp,
        rng: &mut R,
        selection: Selection,
        fallback: Option<Timestamp>,
        weight: impl FnMut(&str) -> Weight,
    ) -> Assignment<'_> {
        let pick = self.pick_weighted(platform, now, rng, selection, fallback, None, weight);
        self.picked(platform, pick)
    }

    /// [`choose`](Self::choose), answering with the key's place; with
    /// `max_handouts`, a key handed out that many times since it became fresh
    /// is passed over too.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn pick_weighted<R: Rng + ?Sized>(
        &mut self,
        platform: &str,
        now: Timestamp,
        rng: &mut R,
        selection: Selection,
        fallback: Option<Timestamp>,
        max_handouts: Option<u32>,
        mut weight: impl FnMut(&str) -> Weight,
    ) -> Pick {
        let Some(pool) = self.platform_mut(platform) else {
            return Pick::UnknownPlatform;
        };
        pool.refresh(now);
        let len = pool.fresh.len();
        if len == 0 {
            return match pool.earliest_refresh() {
                Some(refresh_at) => Pick::Wait(refresh_at),
                None => Pick::NoKeys,
            };
        }
        let weights: Vec<Weight> = pool
            .fresh
            .iter()
            .zip(&pool.handouts)
            .map(|(k, &n)| match max_handouts {
                Some(max) if n >= max => Weight::Calls(0),
                _ => weight(k),
            })
            .collect();
        let eligible = |w: &Weight| !matches!(w, Weight::Calls(0));
        let count = weights.iter().filter(|w| eligible(w)).count();
        if count == 0 {
            let at = match (pool.earliest_refresh(), fallback) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            return match at {
                Some(refresh_at) => Pick::Wait(refresh_at),
                None => Pick::NoKeys,
            };
        }
        let nth_eligible = |n: usize| {
            weights
                .iter()
                .enumerate()
                .filter(|(_, w)| eligible(w))
                .nth(n)
                .map_or(0, |(i, _)| i)
        };
        let known: Vec<u64> = weights
            .iter()
            .filter_map(|w| match w {
                Weight::Calls(c) if *c > 0 => Some(*c),
                _ => None,
            })
            .collect();
        let idx = match selection {
            Selection::RoundRobin => {
                let start = pool.cursor % len;
                let i = (0..len)
                    .map(|d| (start + d) % len)
                    .find(|&i| eligible(&weights[i]))
                    .unwrap_or(start);
                pool.cursor = i + 1;
                i
            }
            Selection::MostRemaining if !known.is_empty() => {
                let rank = |w: &Weight| match w {
                    Weight::Unknown => u64::MAX,
                    Weight::Calls(c) => *c,
                };
                let best = weights.iter().map(rank).max().unwrap_or(0);
                let tied: Vec<usize> = (0..len).filter(|&i| rank(&weights[i]) == best).collect();
                match tied.len() {
                    1 => tied[0],
                    n => tied[uniform_index(rng.next_u64(), n)],
                }
            }
            Selection::WeightedRemaining if !known.is_empty() => {
                // Bounded, so that the sums below cannot overflow.
                let cap = |c: u64| u128::from(c.min(1 << 40));
                let mean = known.iter().map(|&c| cap(c)).sum::<u128>() / known.len() as u128;
                let w = |w: &Weight| match w {
                    Weight::Unknown => mean.max(1),
                    Weight::Calls(c) => cap(*c),
                };
                let total: u128 = weights.iter().map(w).sum();
                let mut r = (u128::from(rng.next_u64()) * total) >> 64;
                let mut pick = 0;
                for (i, x) in weights.iter().enumerate() {
                    let x = w(x);
                    if r < x {
                        pick = i;
                        break;
                    }
                    r -= x;
                }
                pick
            }
            Selection::LeastAssigned => {
                least_assigned(&pool.handouts, rng, |i| eligible(&weights[i]))
            }
            // Uniform, or a quota strategy with nothing known.
            _ if count == len => uniform_index(rng.next_u64(), len),
            _ => nth_eligible(uniform_index(rng.next_u64(), count)),
        };
        pool.handouts[idx] = pool.handouts[idx].saturating_add(1);
        Pick::Key(idx)
    }

    /// Marks `key` of `platform` rate limited refresh_at `refresh_at`. A fresh key becomes
    /// expired; an expired key takes the later of its two refresh times; an invalid
    /// or unknown key is left alone, and so is any key when `refresh_at` is not after
    /// `now` (it would be fresh again at once). `O(log n)`.
    pub fn expire(
        &mut self,
        platform: &str,
        key: &str,
        refresh_at: Timestamp,
        now: Timestamp,
    ) -> Expired {
        let Some(pool) = self.platform_mut(platform) else {
            return Expired::Unchanged;
        };
        pool.refresh(now);
        if refresh_at <= now {
            return Expired::Unchanged;
        }
        let expired = match pool.slots.get(key).copied() {
            Some(Slot::Fresh(idx)) => {
                let k = pool.remove_fresh(idx);
                pool.slots.insert(k.clone(), Slot::Expired(refresh_at));
                pool.expired.insert((refresh_at, k));
                Expired::Expired
            }
            Some(Slot::Expired(old)) if refresh_at > old => {
                let k: Arc<str> = Arc::from(key);
                if let Some((_, k)) = pool.expired.take(&(old, k)) {
                    pool.slots.insert(k.clone(), Slot::Expired(refresh_at));
                    pool.expired.insert((refresh_at, k));
                }
                Expired::Extended
            }
            _ => Expired::Unchanged,
        };
        if expired != Expired::Unchanged {
            self.touched(platform, key);
        }
        expired
    }

    /// Makes an expired `key` of `platform` fresh before its refresh time (the
    /// platform itself said it may be used again). Returns whether it did; a
    /// fresh, invalid or unknown key is left alone. `O(log n)`.
    pub fn release(&mut self, platform: &str, key: &str, now: Timestamp) -> bool {
        let Some(pool) = self.platform_mut(platform) else {
            return false;
        };
        pool.refresh(now);
        let Some(Slot::Expired(until)) = pool.slots.get(key).copied() else {
            return false;
        };
        let Some((_, k)) = pool.expired.take(&(until, Arc::from(key))) else {
            return false;
        };
        pool.push_fresh(k);
        self.touched(platform, key);
        true
    }

    /// Marks `key` of `platform` permanently invalid: it is never handed out or
    /// refreshed again, until an admin publishes it. `O(log n)`.
    pub fn invalidate(&mut self, platform: &str, key: &str, now: Timestamp) -> Invalidated {
        let Some(pool) = self.platform_mut(platform) else {
            return Invalidated::Unknown;
        };
        pool.refresh(now);
        let k = match pool.slots.get(key).copied() {
            None => return Invalidated::Unknown,
            Some(Slot::Invalid) => return Invalidated::AlreadyInvalid,
            Some(Slot::Fresh(idx)) => pool.remove_fresh(idx),
            Some(Slot::Expired(until)) => match pool.expired.take(&(until, Arc::from(key))) {
                Some((_, k)) => k,
                None => Arc::from(key),
            },
        };
        pool.slots.insert(k.clone(), Slot::Invalid);
        pool.invalid.insert(k);
        self.touched(platform, key);
        Invalidated::Invalidated
    }

    /// The state of `key` in `platform` at `now`, or `None` if it is not there.
    /// Does not change the pool. `O(1)`.
    pub fn state(&self, platform: &str, key: &str, now: Timestamp) -> Option<KeyState> {
        let pool = self.platform(platform)?;
        Some(match pool.slots.get(key)? {
            Slot::Fresh(_) => KeyState::Fresh,
            Slot::Expired(until) if *until <= now => KeyState::Fresh,
            Slot::Expired(refresh_at) => KeyState::Expired {
                refresh_at: *refresh_at,
            },
            Slot::Invalid => KeyState::Invalid,
        })
    }

    /// The platforms, in the order they were first published. `O(P)`.
    pub fn platforms(&self) -> impl Iterator<Item = &str> {
        self.platforms.iter().map(|(name, _)| name.as_str())
    }

    /// How many platforms there are. `O(1)`.
    pub fn platform_count(&self) -> usize {
        self.platforms.len()
    }

    /// How many keys `platform` has, in any state; `None` for an unknown
    /// platform. `O(1)`.
    pub fn key_count(&self, platform: &str) -> Option<usize> {
        self.platform(platform).map(|p| p.slots.len())
    }

    /// Whether `platform` has `key`, in any state. `O(1)`.
    pub fn contains(&self, platform: &str, key: &str) -> bool {
        self.platform(platform)
            .is_some_and(|p| p.slots.contains_key(key))
    }

    /// Whether `platform` has ever been published to. `O(1)`.
    pub fn has_platform(&self, platform: &str) -> bool {
        self.index.contains_key(platform)
    }

    /// The fresh and expired keys of `platform` (fresh first, then expired by
    /// refresh time), after refreshing due keys; `None` for an unknown platform. `O(n)`.
    pub fn keys(&mut self, platform: &str, now: Timestamp) -> Option<Vec<String>> {
        let pool = self.platform_mut(platform)?;
        pool.refresh(now);
        Some(
            pool.fresh
                .iter()
                .chain(pool.expired.iter().map(|(_, k)| k))
                .map(|k| k.to_string())
                .collect(),
        )
    }

    /// The invalid keys of `platform`, sorted; `None` for an unknown platform. `O(n)`.
    pub fn invalid_keys(&self, platform: &str) -> Option<Vec<String>> {
        let pool = self.platform(platform)?;
        Some(pool.invalid.iter().map(|k| k.to_string()).collect())
    }

    /// How many keys of `platform` are in each state at `now`, after refreshing due
    /// keys; `None` for an unknown platform. `O(1)` plus the refresh of due keys.
    pub fn counts(&mut self, platform: &str, now: Timestamp) -> Option<Counts> {
        let pool = self.platform_mut(platform)?;
        pool.refresh(now);
        Some(pool.counts())
    }

    /// Key counts and the next refresh time of every platform at `now`, after
    /// refreshing due keys, in the order the platforms were first published. `O(P log n)`.
    pub fn status(&mut self, now: Timestamp) -> Vec<PlatformStatus> {
        self.refresh_due(now);
        self.platforms
            .iter()
            .map(|(name, pool)| {
                let c = pool.counts();
                PlatformStatus {
                    platform: name.clone(),
                    fresh: c.fresh as u64,
                    expired: c.expired as u64,
                    invalid: c.invalid as u64,
                    next_refresh: pool
                        .earliest_refresh()
                        .map(|t| t.as_millis().div_ceil(1000)),
                    ..PlatformStatus::default()
                }
            })
            .collect()
    }

    /// Refreshes the due keys of every platform; returns how many became fresh.
    /// `O(P)` plus `O(log n)` per refreshed key.
    pub fn refresh_due(&mut self, now: Timestamp) -> usize {
        self.platforms.iter_mut().map(|(_, p)| p.refresh(now)).sum()
    }

    /// The earliest refresh time of any expired key, if any. `O(P log n)`.
    pub fn next_refresh(&self) -> Option<Timestamp> {
        self.platforms
            .iter()
            .filter_map(|(_, p)| p.earliest_refresh())
            .min()
    }

    /// How many times a key of `platform` became fresh (was published,
    /// revived or refreshed) so far: when it has not moved, no key came back.
    /// `O(1)`; due keys are not refreshed by it.
    pub fn freshened(&self, platform: &str) -> u64 {
        self.platform(platform).map_or(0, |p| p.freshened)
    }

    /// The fresh keys of `platform`, in no particular order (without
    /// refreshing due keys). `O(1)` per key.
    pub fn fresh_keys(&self, platform: &str) -> impl Iterator<Item = &str> + '_ {
        self.platform(platform)
            .into_iter()
            .flat_map(|p| p.fresh.iter().map(|k| &**k))
    }

    /// The expired keys of `platform` with their refresh times, earliest
    /// first (keys whose time has come but that were not refreshed yet
    /// included). `O(1)` per key.
    pub fn expired_keys(&self, platform: &str) -> impl Iterator<Item = (Timestamp, &str)> + '_ {
        self.platform(platform)
            .into_iter()
            .flat_map(|p| p.expired.iter().map(|(t, k)| (*t, &**k)))
    }

    /// `key` of `platform`, if it is fresh at `now` (after refreshing the
    /// platform's due keys). `O(1)` plus the refresh of due keys.
    pub(crate) fn pick_key(&mut self, platform: &str, key: &str, now: Timestamp) -> Option<Pick> {
        let pool = self.platform_mut(platform)?;
        pool.refresh(now);
        match pool.slots.get(key)? {
            Slot::Fresh(idx) => {
                let idx = *idx;
                pool.handouts[idx] = pool.handouts[idx].saturating_add(1);
                Some(Pick::Key(idx))
            }
            _ => None,
        }
    }

    /// The earliest refresh time of `platform`'s expired keys. `O(log n)`.
    pub fn next_refresh_of(&self, platform: &str) -> Option<Timestamp> {
        self.platform(platform)?.earliest_refresh()
    }

    /// Checks the pool's internal consistency (every key in exactly one state, the
    /// indexes agree). For tests and fuzzing; `O(n)` over all platforms.
    pub fn check_consistency(&self) -> Result<(), String> {
        if self.index.len() != self.platforms.len() {
            return Err("platform index and platform list differ in length".into());
        }
        for (i, (name, pool)) in self.platforms.iter().enumerate() {
            if self.index.get(name) != Some(&i) {
                return Err(format!("platform {name} is not indexed at {i}"));
            }
            let c = pool.counts();
            if pool.handouts.len() != pool.fresh.len() {
                return Err(format!(
                    "platform {name}: handouts and fresh keys differ in length"
                ));
            }
            if c.total() != pool.slots.len() {
                return Err(format!(
                    "platform {name}: {} fresh + {} expired + {} invalid != {} keys",
                    c.fresh,
                    c.expired,
                    c.invalid,
                    pool.slots.len()
                ));
            }
            for (idx, k) in pool.fresh.iter().enumerate() {
                match pool.slots.get(k) {
                    Some(Slot::Fresh(j)) if *j == idx => {}
                    other => {
                        return Err(format!("platform {name}: fresh[{idx}] has slot {other:?}"));
                    }
                }
            }
            for (until, k) in &pool.expired {
                match pool.slots.get(k) {
                    Some(Slot::Expired(t)) if t == until => {}
                    other => {
                        return Err(format!("platform {name}: expired key has slot {other:?}"));
                    }
                }
            }
            for k in &pool.invalid {
                if !matches!(pool.slots.get(k), Some(Slot::Invalid)) {
                    return Err(format!("platform {name}: invalid key not marked invalid"));
                }
            }
        }
        Ok(())
    }

    fn ensure_platform(&mut self, platform: &str) {
        if !self.index.contains_key(platform) {
            self.index
                .insert(platform.to_string(), self.platforms.len());
            self.platforms
                .push((platform.to_string(), PlatformPool::default()));
            self.touched_platforms();
        }
    }
}

/// The index with the fewest handouts among those `eligible` allows (at least
/// one must), ties uniformly at random.
fn least_assigned<R: Rng + ?Sized>(
    handouts: &[u32],
    rng: &mut R,
    eligible: impl Fn(usize) -> bool,
) -> usize {
    let fewest = (0..handouts.len())
        .filter(|&i| eligible(i))
        .map(|i| handouts[i])
        .min()
        .unwrap_or(0);
    let tied: Vec<usize> = (0..handouts.len())
        .filter(|&i| eligible(i) && handouts[i] == fewest)
        .collect();
    match tied.len() {
        0 => 0,
        1 => tied[0],
        n => tied[uniform_index(rng.next_u64(), n)],
    }
}

/// Maps a uniform 64-bit word to `0..len` by multiply-shift (bias below `len / 2^64`).
fn uniform_index(word: u64, len: usize) -> usize {
    ((u128::from(word) * len as u128) >> 64) as usize
}
