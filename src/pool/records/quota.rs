//! The quota part of the records: each shard record of a platform may carry,
//! under `quota`, the quota entries of that shard ([`QuotaEntries`]): the
//! views of the accounts whose key or name falls in it ([`Account::shard`]),
//! the named account of its keys, and the outstanding leases of its keys. A
//! save that changes one account's view rewrites that one record.

use super::{ChangedRecords, ShardRecord, StateRecords};
use crate::pool::KeyPool;
use crate::quota::{
    Account, AccountSnapshot, LeaseSnapshot, QuotaSnapshot, QuotaView, Quotas, Skew,
};
use crate::time::Timestamp;
use std::collections::BTreeMap;

/// The quota entries of one shard record (all optional: a record written by
/// a keyman that knew no quotas has none, and one that knows none ignores
/// them).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct QuotaEntries {
    /// The views of the accounts of this shard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) accounts: Vec<AccountEntry>,
    /// `[key, account]`: the named account of keys of this shard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) members: Vec<(String, String)>,
    /// The outstanding leases of keys of this shard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) leases: Vec<LeaseEntry>,
    /// The last lease id given when the record was written: ids are never
    /// given twice, across restarts too.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(super) last_lease_id: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One account's saved view.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct AccountEntry {
    account: Account,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    view: Option<QuotaView>,
    #[serde(default, skip_serializing_if = "is_default_skew")]
    skew: Skew,
}

fn is_default_skew(skew: &Skew) -> bool {
    *skew == Skew::default()
}

/// One saved lease.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct LeaseEntry {
    id: u64,
    key: String,
    account: Account,
    calls: u64,
    until: Timestamp,
}

impl QuotaEntries {
    /// Whether there is nothing to write.
    pub(super) fn is_empty(&self) -> bool {
        self.accounts.is_empty()
            && self.members.is_empty()
            && self.leases.is_empty()
            && self.last_lease_id == 0
    }

    /// Whether the record holds no quota entry (the lease counter aside).
    pub(super) fn has_no_entries(&self) -> bool {
        self.accounts.is_empty() && self.members.is_empty() && self.leases.is_empty()
    }

    /// Adds these entries of `platform` to `into`.
    pub(super) fn decode_into(self, platform: &str, into: &mut QuotaSnapshot) {
        into.accounts
            .extend(self.accounts.into_iter().map(|a| AccountSnapshot {
                platform: platform.to_owned(),
                account: a.account,
                view: a.view,
                skew: a.skew,
            }));
        into.members.extend(
            self.members
                .into_iter()
                .map(|(key, account)| (platform.to_owned(), key, account)),
        );
        into.leases
            .extend(self.leases.into_iter().map(|l| LeaseSnapshot {
                id: l.id,
                platform: platform.to_owned(),
                key: l.key,
                account: l.account,
                calls: l.calls,
                until: l.until,
            }));
        into.last_lease_id = into.last_lease_id.max(self.last_lease_id);
    }
}

/// Fills the quota entries of `platform` into the shard records being
/// written (`shards`; entries of other shards are skipped), each sorted, and
/// the lease counter into each. `O(accounts + members + leases)`.
pub(super) fn fill(quotas: &Quotas, platform: &str, shards: &mut BTreeMap<u16, ShardRecord>) {
    for (account, state) in quotas.accounts_of(platform) {
        if state.view.is_none() && state.skew == Skew::default() {
            // Known only by its leases, which are saved: nothing to keep.
            continue;
        }
        if let Some(r) = shards.get_mut(&account.shard()) {
            r.quota.accounts.push(AccountEntry {
                account: account.clone(),
                view: state.view.clone(),
                skew: state.skew,
            });
        }
    }
    for (key, account) in quotas.members_of(platform) {
        if let Some(r) = shards.get_mut(&super::shard_of(key)) {
            r.quota.members.push((key.to_owned(), account.to_owned()));
        }
    }
    for (id, lease) in quotas.leases() {
        if lease.platform != platform {
            continue;
        }
        if let Some(r) = shards.get_mut(&super::shard_of(&lease.key)) {
            r.quota.leases.push(LeaseEntry {
                id,
                key: lease.key.clone(),
                account: lease.account.clone(),
                calls: lease.calls,
                until: lease.until,
            });
        }
    }
    let last = quotas.last_lease_id();
    for r in shards.values_mut() {
        r.quota.accounts.sort_by(|a, b| a.account.cmp(&b.account));
        r.quota.members.sort();
        // Leases are in id order already.
        r.quota.last_lease_id = last;
    }
}

impl KeyPool {
    /// The records that changed after generation `generation` of the pool's
    /// change log and `quota_generation` of `quotas`' (the shards whose quota
    /// entries changed, of the platforms of the pool).
    pub fn changed_since_with(
        &self,
        generation: u64,
        quotas: &Quotas,
        quota_generation: u64,
    ) -> ChangedRecords {
        let mut changed = self.changed_since(generation);
        for (platform, shard) in quotas.changed_since(quota_generation) {
            if let Some(&i) = self.index.get(platform) {
                changed.shards.insert((i, shard));
            }
        }
        changed
    }

    /// Every record of the pool and of `quotas` (of the platforms of the
    /// pool), in the current format. `O(n)`.
    pub fn encode_all_records_with(&self, quotas: &Quotas) -> StateRecords {
        self.encode(Some(quotas), &self.all_records(), true)
    }

    /// The records `changed` names, with their quota entries from `quotas`.
    pub fn encode_records_with(&self, quotas: &Quotas, changed: &ChangedRecords) -> StateRecords {
        self.encode(Some(quotas), changed, false)
    }
}

/// The quota state a decoded snapshot restores, in the form a save of it
/// writes: only the platforms of `pool` (a quota entry of another platform
/// is not saved again), and what [`Quotas::from_snapshot`] keeps.
pub fn canonical_quotas(quotas: &QuotaSnapshot, pool: &crate::pool::PoolSnapshot) -> QuotaSnapshot {
    let platforms: std::collections::BTreeSet<&str> = pool
        .platforms
        .iter()
        .filter(|p| !p.name.is_empty())
        .map(|p| p.name.as_str())
        .collect();
    let mut s = Quotas::from_snapshot(quotas).snapshot();
    s.accounts
        .retain(|a| platforms.contains(a.platform.as_str()));
    s.members.retain(|(p, _, _)| platforms.contains(p.as_str()));
    s.leases.retain(|l| platforms.contains(l.platform.as_str()));
    s
}
