//! [`PlatformPool`]: the keys of one platform, indexed for `O(1)` choice and
//! `O(log n)` refresh.

use super::Counts;
use crate::time::Timestamp;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

#[derive(Debug, Clone, Copy)]
pub(super) enum Slot {
    /// Index into `PlatformPool::fresh`.
    Fresh(usize),
    Expired(Timestamp),
    Invalid,
}

#[derive(Debug, Default)]
pub(super) struct PlatformPool {
    pub(super) slots: HashMap<Arc<str>, Slot>,
    /// Dense array of the fresh keys: `O(1)` random choice and removal.
    pub(super) fresh: Vec<Arc<str>>,
    /// How many times each fresh key (same index) was handed out since it
    /// became fresh.
    pub(super) handouts: Vec<u32>,
    /// Expired keys ordered by refresh time: `O(log n)` refresh of the earliest.
    pub(super) expired: BTreeSet<(Timestamp, Arc<str>)>,
    /// Invalid keys, ordered for stable listing.
    pub(super) invalid: BTreeSet<Arc<str>>,
    /// Cursor of [`Selection::RoundRobin`].
    pub(super) cursor: usize,
    /// How many times a key became fresh (published, revived, refreshed).
    pub(super) freshened: u64,
}

impl PlatformPool {
    pub(super) fn push_fresh(&mut self, key: Arc<str>) {
        let idx = self.fresh.len();
        self.fresh.push(key.clone());
        self.handouts.push(0);
        self.freshened += 1;
        self.slots.insert(key, Slot::Fresh(idx));
    }

    /// Removes `fresh[idx]` in `O(1)` and fixes the index of the key moved into its place.
    pub(super) fn remove_fresh(&mut self, idx: usize) -> Arc<str> {
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

    pub(super) fn refresh(&mut self, now: Timestamp) -> usize {
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

    pub(super) fn earliest_refresh(&self) -> Option<Timestamp> {
        self.expired.first().map(|(t, _)| *t)
    }

    pub(super) fn counts(&self) -> Counts {
        Counts {
            fresh: self.fresh.len(),
            expired: self.expired.len(),
            invalid: self.invalid.len(),
        }
    }
}
