//! The quota side's change log: which shard records hold quota entries that
//! changed since a save, so that a save writes only those
//! ([`KeyPool::changed_since_with`](crate::KeyPool::changed_since_with)).
//!
//! Quota entries are saved in the shard records of the pool's state: an
//! account's view in the shard of its key or name ([`Account::shard`]), a
//! key's membership of a named account and a lease in the shard of the key
//! (see [`crate::pool::STATE_FORMAT_VERSION`]).

use super::{Account, QuotaView, Quotas, Skew};
use crate::pool::{SHARDS, shard_of};
use std::collections::{BTreeSet, HashMap};

/// Per platform and shard, the generation of the last change of its quota
/// entries. `O(1)` per change.
#[derive(Debug, Clone, Default)]
pub(super) struct QuotaChanges {
    generation: u64,
    /// Per platform, per shard: the generation of its last change. Kept
    /// when a platform's quotas are forgotten, so that the save empties them.
    shards: HashMap<String, Vec<u64>>,
}

/// What of an account is saved: its view and its skew.
pub(super) type SavedForm = Option<(Option<QuotaView>, Skew)>;

impl Account {
    /// The shard record its view is saved in: the shard of its key, or of its
    /// name ([`shard_of`]).
    pub fn shard(&self) -> u16 {
        match self {
            Account::Key(k) | Account::Named(k) => shard_of(k),
        }
    }
}

impl Quotas {
    /// Notes that the quota entries of shard `shard` of `platform` changed.
    pub(super) fn touch(&mut self, platform: &str, shard: u16) {
        let log = &mut self.changes;
        log.generation += 1;
        let generation = log.generation;
        let shards = match log.shards.get_mut(platform) {
            Some(shards) => shards,
            None => log
                .shards
                .entry(platform.to_string())
                .or_insert_with(|| vec![0; usize::from(SHARDS)]),
        };
        if let Some(g) = shards.get_mut(usize::from(shard)) {
            *g = generation;
        }
    }

    /// Notes that what is saved of `key` (its membership, its leases) changed.
    pub(super) fn touch_key(&mut self, platform: &str, key: &str) {
        self.touch(platform, shard_of(key));
    }

    /// What is saved of `account`: its view and skew, if it has any.
    pub(super) fn saved_form(&self, platform: &str, account: &Account) -> SavedForm {
        self.account(platform, account)
            .map(|s| (s.view.clone(), s.skew))
            .filter(|(view, skew)| view.is_some() || *skew != Skew::default())
    }

    /// Runs `change` and notes the shard of `account` as changed if what is
    /// saved of it changed.
    pub(super) fn tracking<T>(
        &mut self,
        platform: &str,
        account: &Account,
        change: impl FnOnce(&mut Self) -> T,
    ) -> T {
        let before = self.saved_form(platform, account);
        let out = change(self);
        if self.saved_form(platform, account) != before {
            self.touch(platform, account.shard());
        }
        out
    }

    /// The change log's generation now: pass it to
    /// [`changed_since`](Self::changed_since) after a save to learn what
    /// changed since.
    pub fn change_generation(&self) -> u64 {
        self.changes.generation
    }

    /// The (platform, shard) whose quota entries changed after generation
    /// `generation`. `O(P * SHARDS)`.
    pub fn changed_since(&self, generation: u64) -> BTreeSet<(&str, u16)> {
        self.changes
            .shards
            .iter()
            .flat_map(|(platform, shards)| {
                shards
                    .iter()
                    .enumerate()
                    .filter(move |(_, g)| **g > generation)
                    .map(move |(s, _)| (platform.as_str(), s as u16))
            })
            .collect()
    }
}
