//! Writing the pool as records in the current format: all of them, or those
//! that changed.

use super::{
    ChangedRecords, META_RECORD, MetaRecord, SHARDS, STATE_FORMAT_VERSION, ShardRecord,
    StateRecords, shard_of, shard_record_name,
};
use crate::pool::KeyPool;
use crate::quota::Quotas;
use std::collections::BTreeSet;

impl KeyPool {
    /// Every record of the pool (its keys, no quota entries), in the current
    /// format: what a save writes when it replaces everything. `O(n)`.
    pub fn encode_all_records(&self) -> StateRecords {
        // Empty shards need not be stored when everything is replaced.
        self.encode(None, &self.all_records(), true)
    }

    /// The records `changed` names, in the current format (an empty shard is
    /// written as such: it replaces what was saved). `O(k)` for the keys of
    /// the platforms with changed shards.
    pub fn encode_records(&self, changed: &ChangedRecords) -> StateRecords {
        self.encode(None, changed, false)
    }

    /// Every record: the meta record and every shard of every platform.
    pub(super) fn all_records(&self) -> ChangedRecords {
        ChangedRecords {
            platforms: true,
            shards: (0..self.platforms.len())
                .flat_map(|p| (0..SHARDS).map(move |s| (p, s)))
                .collect(),
        }
    }

    /// The records `changed` names, with the quota entries of `quotas` if
    /// given; `skip_empty` leaves out shards with nothing in them.
    pub(super) fn encode(
        &self,
        quotas: Option<&Quotas>,
        changed: &ChangedRecords,
        skip_empty: bool,
    ) -> StateRecords {
        let mut records = StateRecords::new();
        if changed.platforms {
            let meta = MetaRecord {
                version: STATE_FORMAT_VERSION,
                shards: SHARDS,
                platforms: self.platforms.iter().map(|(n, _)| n.clone()).collect(),
                last_lease_id: quotas.map_or(0, Quotas::last_lease_id),
            };
            records.insert(
                META_RECORD.to_owned(),
                serde_json::to_vec(&meta).unwrap_or_default(),
            );
        }
        for (p, (name, pool)) in self.platforms.iter().enumerate() {
            let wanted: BTreeSet<u16> = changed
                .shards
                .range((p, 0)..=(p, u16::MAX))
                .map(|(_, s)| *s)
                .collect();
            if !wanted.is_empty() {
                let mut shards: std::collections::BTreeMap<u16, ShardRecord> = wanted
                    .iter()
                    .map(|s| {
                        (
                            *s,
                            ShardRecord {
                                version: STATE_FORMAT_VERSION,
                                platform: name.clone(),
                                shard: *s,
                                fresh: Vec::new(),
                                expired: Vec::new(),
                                invalid: Vec::new(),
                                quota: Default::default(),
                            },
                        )
                    })
                    .collect();
                for k in &pool.fresh {
                    if let Some(r) = shards.get_mut(&shard_of(k)) {
                        r.fresh.push(k.to_string());
                    }
                }
                for (t, k) in &pool.expired {
                    if let Some(r) = shards.get_mut(&shard_of(k)) {
                        r.expired.push((k.to_string(), *t));
                    }
                }
                for k in &pool.invalid {
                    if let Some(r) = shards.get_mut(&shard_of(k)) {
                        r.invalid.push(k.to_string());
                    }
                }
                if let Some(quotas) = quotas {
                    super::quota::fill(quotas, name, &mut shards);
                }
                for (s, record) in shards {
                    if skip_empty
                        && record.fresh.is_empty()
                        && record.expired.is_empty()
                        && record.invalid.is_empty()
                        && record.quota.has_no_entries()
                    {
                        continue;
                    }
                    records.insert(
                        shard_record_name(name, s),
                        serde_json::to_vec(&record).unwrap_or_default(),
                    );
                }
            }
        }
        records
    }
}
