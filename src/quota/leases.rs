//! Leases: calls of an account lent to a worker until a deadline
//! ([`LeaseGrant`], [`Lease`]), granted, ended and timed out.

use super::{Account, Quotas, Source};
use crate::time::Timestamp;
use std::time::Duration;

/// A lease granted: how many calls, until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The lease's id (`lease_id` on the wire).
    pub id: u64,
    /// Calls the worker may make with the key.
    pub calls: u64,
    /// When the lease ends and counts as fully used.
    pub until: Timestamp,
}

/// A lease outstanding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The platform.
    pub platform: String,
    /// The key lent.
    pub key: String,
    /// Whose quota it spends.
    pub account: Account,
    /// Calls lent.
    pub calls: u64,
    /// When it counts as fully used.
    pub until: Timestamp,
}

impl Quotas {
    /// Lends up to `want` calls of `key`'s account at `now`: at most remaining −
    /// `floor` − calls already lent, at least 1; when nothing is known of the
    /// account, 1 call (the worker's report then tells the rest). `None` when
    /// nothing can be lent, or the account has `max_leases` leases outstanding.
    #[allow(clippy::too_many_arguments)]
    pub fn grant(
        &mut self,
        now: Timestamp,
        platform: &str,
        key: &str,
        want: u64,
        floor: u64,
        max_leases: usize,
        ttl: Duration,
    ) -> Option<LeaseGrant> {
        if want == 0 || self.leases_of(platform, key) >= max_leases {
            return None;
        }
        let calls = match self.available(now, platform, key, floor) {
            Some(0) => return None,
            Some(n) => n.min(want),
            None => 1,
        };
        let account = self.account_of(platform, key);
        let p = self.platforms.entry(platform.to_string()).or_default();
        let state = p.accounts.entry(account.clone()).or_default();
        state.leases += 1;
        state.leased = state.leased.saturating_add(calls);
        self.next_lease = self.next_lease.wrapping_add(1);
        let id = self.next_lease;
        let until = now.saturating_add(ttl);
        self.leases.insert(
            id,
            Lease {
                platform: platform.to_string(),
                key: key.to_string(),
                account,
                calls,
                until,
            },
        );
        self.deadlines.insert((until, id));
        self.touch_key(platform, key);
        Some(LeaseGrant { id, calls, until })
    }

    /// Ends lease `id` at `now`, counting `used` calls against its account (all
    /// of them when `None`). Returns the lease, or `None` if it is not
    /// outstanding.
    pub fn end_lease(&mut self, now: Timestamp, id: u64, used: Option<u64>) -> Option<Lease> {
        let lease = self.leases.get(&id)?;
        let (platform, account) = (lease.platform.clone(), lease.account.clone());
        let lease = self.tracking(&platform, &account, |q| {
            q.end_lease_untracked(now, id, used)
        })?;
        self.touch_key(&lease.platform, &lease.key);
        Some(lease)
    }

    fn end_lease_untracked(&mut self, now: Timestamp, id: u64, used: Option<u64>) -> Option<Lease> {
        let lease = self.leases.remove(&id)?;
        self.deadlines.remove(&(lease.until, id));
        let spent = used.unwrap_or(lease.calls);
        if let Some(p) = self.platforms.get_mut(&lease.platform) {
            if let Some(state) = p.accounts.get_mut(&lease.account) {
                state.leases = state.leases.saturating_sub(1);
                state.leased = state.leased.saturating_sub(lease.calls);
                state.roll(now);
                if let Some(view) = &mut state.view {
                    view.spent = view.spent.saturating_add(spent);
                    view.spent_at = Some(now.max(view.spent_at.unwrap_or(now)));
                    if view.source == Source::Hint {
                        view.source = Source::Leases;
                    }
                }
            }
            p.burn_since.get_or_insert(now);
            p.record_burn(now, spent);
        }
        Some(lease)
    }

    /// Ends the leases whose deadline has come by `now`, each counted as fully
    /// used. Returns them.
    pub fn end_due_leases(&mut self, now: Timestamp) -> Vec<Lease> {
        let mut ended = Vec::new();
        while let Some(&(until, id)) = self.deadlines.first() {
            if until > now {
                break;
            }
            match self.end_lease(now, id, None) {
                Some(l) => ended.push(l),
                None => {
                    self.deadlines.pop_first();
                }
            }
        }
        ended
    }

    /// The earliest deadline of a lease outstanding.
    pub fn next_lease_end(&self) -> Option<Timestamp> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// The earliest deadline of a lease of `platform`. `O(leases)`.
    pub fn next_lease_end_of(&self, platform: &str) -> Option<Timestamp> {
        self.deadlines
            .iter()
            .find(|(_, id)| self.leases.get(id).is_some_and(|l| l.platform == platform))
            .map(|(t, _)| *t)
    }
}
