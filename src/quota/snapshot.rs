//! [`QuotaSnapshot`]: what of [`Quotas`] is worth saving with the pool's state,
//! in a serde form, and back.

use super::{Account, AccountQuota, Lease, PlatformQuota, QuotaView, Quotas, Skew};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// One account's saved quota state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSnapshot {
    /// The platform.
    pub platform: String,
    /// The account.
    pub account: Account,
    /// Its view, if any.
    pub view: Option<QuotaView>,
    /// Its clock skew.
    pub skew: Skew,
}

/// One saved lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseSnapshot {
    /// The lease's id.
    pub id: u64,
    /// The platform.
    pub platform: String,
    /// The key lent (a secret, as the pool's keys are).
    pub key: String,
    /// Whose quota it spends.
    pub account: Account,
    /// Calls lent.
    pub calls: u64,
    /// When it counts as fully used.
    pub until: Timestamp,
}

/// The quota views, named accounts and outstanding leases, as saved. The burn
/// history is not kept (the forecast learns it again in minutes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaSnapshot {
    /// Every account with a view or a skew (an account known only by its
    /// leases is rebuilt from them).
    pub accounts: Vec<AccountSnapshot>,
    /// The named account of keys that have one: (platform, key, account).
    pub members: Vec<(String, String, String)>,
    /// The leases outstanding.
    pub leases: Vec<LeaseSnapshot>,
    /// The last lease id given.
    pub last_lease_id: u64,
}

impl Quotas {
    /// What is worth saving, in a stable order.
    pub fn snapshot(&self) -> QuotaSnapshot {
        let mut accounts: Vec<AccountSnapshot> = self
            .accounts()
            .filter(|(_, _, state)| state.view.is_some() || state.skew != Skew::default())
            .map(|(platform, account, state)| AccountSnapshot {
                platform: platform.to_string(),
                account: account.clone(),
                view: state.view.clone(),
                skew: state.skew,
            })
            .collect();
        accounts.sort_by(|a, b| (&a.platform, &a.account).cmp(&(&b.platform, &b.account)));
        let mut members: Vec<(String, String, String)> = self
            .memberships()
            .map(|(p, k, a)| (p.to_string(), k.to_string(), a.to_string()))
            .collect();
        members.sort();
        let leases = self
            .leases
            .iter()
            .map(|(id, l)| LeaseSnapshot {
                id: *id,
                platform: l.platform.clone(),
                key: l.key.clone(),
                account: l.account.clone(),
                calls: l.calls,
                until: l.until,
            })
            .collect();
        QuotaSnapshot {
            accounts,
            members,
            leases,
            last_lease_id: self.next_lease,
        }
    }

    /// The quota state a snapshot describes. Lease counts are rebuilt from the
    /// leases; a lease whose id repeats is kept once.
    pub fn from_snapshot(s: &QuotaSnapshot) -> Quotas {
        let mut q = Quotas::new();
        for (platform, key, account) in &s.members {
            let p = q.platforms.entry(platform.clone()).or_default();
            // A key listed twice is in the account listed last.
            if let Some(old) = p.members.insert(key.clone(), account.clone())
                && let Some(set) = p.named.get_mut(&old)
            {
                set.remove(key);
                if set.is_empty() {
                    p.named.remove(&old);
                }
            }
            p.named
                .entry(account.clone())
                .or_default()
                .insert(key.clone());
        }
        for a in &s.accounts {
            let p: &mut PlatformQuota = q.platforms.entry(a.platform.clone()).or_default();
            p.accounts.insert(
                a.account.clone(),
                AccountQuota {
                    view: a.view.clone(),
                    skew: a.skew.bounded(),
                    leases: 0,
                    leased: 0,
                },
            );
        }
        for l in &s.leases {
            if q.leases.contains_key(&l.id) {
                continue;
            }
            let p = q.platforms.entry(l.platform.clone()).or_default();
            let state = p.accounts.entry(l.account.clone()).or_default();
            state.leases += 1;
            state.leased = state.leased.saturating_add(l.calls);
            q.deadlines.insert((l.until, l.id));
            q.leases.insert(
                l.id,
                Lease {
                    platform: l.platform.clone(),
                    key: l.key.clone(),
                    account: l.account.clone(),
                    calls: l.calls,
                    until: l.until,
                },
            );
        }
        let top = s.leases.iter().map(|l| l.id).max().unwrap_or(0);
        q.next_lease = s.last_lease_id.max(top);
        q
    }
}
