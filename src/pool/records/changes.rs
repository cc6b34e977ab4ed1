//! The pool's change log: which records changed since a save
//! ([`ChangedRecords`]).

use super::{SHARDS, shard_of};
use crate::pool::KeyPool;
use std::collections::BTreeSet;

/// Which records changed since a generation of the pool's change log: what
/// a save must write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangedRecords {
    /// Whether the list of platforms changed (the meta record).
    pub platforms: bool,
    /// The shards that changed: (platform index, shard).
    pub shards: BTreeSet<(usize, u16)>,
}

impl ChangedRecords {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.platforms && self.shards.is_empty()
    }
}

/// The pool's change log: per platform and shard the generation of its last
/// change, so that a save writes only what changed. `O(1)` per change.
#[derive(Debug, Default, Clone)]
pub(in crate::pool) struct ChangeLog {
    generation: u64,
    platforms_at: u64,
    /// Per platform (by index), per shard: the generation of its last change.
    shards: Vec<Vec<u64>>,
}

impl KeyPool {
    /// Notes that `key` of `platform` changed state (called by the pool's
    /// operations that change it). `O(1)`.
    pub(in crate::pool) fn touched(&mut self, platform: &str, key: &str) {
        let Some(&i) = self.index.get(platform) else {
            return;
        };
        let log = &mut self.changes;
        log.generation += 1;
        while log.shards.len() <= i {
            log.shards.push(vec![0; usize::from(SHARDS)]);
            log.platforms_at = log.generation;
        }
        log.shards[i][usize::from(shard_of(key))] = log.generation;
    }

    /// Notes that a platform was added.
    pub(in crate::pool) fn touched_platforms(&mut self) {
        let log = &mut self.changes;
        log.generation += 1;
        log.platforms_at = log.generation;
    }

    /// The change log's generation now: pass it to [`changed_since`](Self::changed_since)
    /// after a save to learn what changed since.
    pub fn change_generation(&self) -> u64 {
        self.changes.generation
    }

    /// The records that changed after generation `generation`. `O(P * SHARDS)`.
    pub fn changed_since(&self, generation: u64) -> ChangedRecords {
        let log = &self.changes;
        ChangedRecords {
            platforms: log.platforms_at > generation,
            shards: log
                .shards
                .iter()
                .enumerate()
                .flat_map(|(p, shards)| {
                    shards
                        .iter()
                        .enumerate()
                        .filter(move |(_, g)| **g > generation)
                        .map(move |(s, _)| (p, s as u16))
                })
                .collect(),
        }
    }
}
