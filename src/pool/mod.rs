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
use std::collections::HashMap;
use std::sync::Arc;

mod choice;
mod platform;
mod records;
mod snapshot;
#[cfg(test)]
mod tests;
mod types;

pub use records::{
    ChangedRecords, DecodedState, META_RECORD, SHARDS, STATE_FORMAT_VERSION, StateDecodeError,
    StateRecords, canonical_quotas, canonical_snapshot, check_state_decoding, decode_records,
    shard_of, shard_record_name,
};
pub use snapshot::{PlatformSnapshot, PoolSnapshot};
pub(crate) use types::Pick;
pub use types::{Assignment, Counts, Expired, Invalidated, KeyState, Published, Selection, Weight};

use platform::{PlatformPool, Slot};

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
