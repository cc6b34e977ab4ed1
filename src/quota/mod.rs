//! [`Quotas`]: what the platforms say about the quota of each account, and the
//! calls lent out of it in leases.
//!
//! A key is its own **account** unless PUBLISH names one ([`Account`]): all the
//! keys of one account share one quota (the personal access tokens of one GitHub
//! user share that user's 5 000 calls an hour). Per account the core keeps a
//! [`QuotaView`] (limit, remaining, reset, when and from what it was learnt) and
//! the clock skew between the platform and us ([`Skew`]), and it lends calls in
//! **leases** ([`LeaseGrant`]): never more than the account's remaining calls,
//! less its floor, less the calls of the leases still outstanding
//! ([`Quotas::available`]).
//!
//! Like the rest of the core this module does no I/O: the time is passed in.
//! The [`Engine`](crate::Engine) owns one and calls it on REPORT, on NEW with
//! `lease`, on PUBLISH with `account`/`limit`, and on its timers.
//!
//! Estimates are conservative: a lease's calls count against the account from
//! the grant until it ends (with `done`: the calls it says it used; at its
//! deadline: all of them), even when a report taken meanwhile already counted
//! some of them. A report never raises the remaining count of its window unless
//! it is newer than everything known about that window.

use crate::time::Timestamp;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

mod changes;
mod config;
mod forecast;
mod leases;
mod report;
mod snapshot;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_skew;
mod view;

pub use config::QuotaConfig;
pub use forecast::Forecast;
pub use leases::{Lease, LeaseGrant};
pub use report::{LeaseReturn, Reported};
pub use snapshot::{AccountSnapshot, LeaseSnapshot, QuotaSnapshot};
pub use view::{Account, AccountQuota, Observation, QuotaView, Skew, Source};

/// The largest clock skew between a platform and us that is believed: a
/// `server_date` further off is taken as this far off.
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);
/// The smallest clock skew between a platform and us that is acted on: a
/// `Date` has whole seconds, so a skew learnt from dates under a second is
/// not told apart from none (the platform's times are then taken as they are,
/// as a worker's EXPIRE gives them).
pub const MEASURABLE_SKEW: Duration = Duration::from_secs(1);
/// The default cap on outstanding leases per account (GitHub's secondary limits
/// ask for no more than 100 concurrent requests per user).
pub const DEFAULT_MAX_LEASES: usize = 100;
/// How long a lease lasts by default before it counts as fully used.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10 * 60);
/// The quota window assumed when a platform gives no reset time (an hour, as
/// GitHub's and GitLab's REST quotas).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);
/// How far back the burn rate looks.
pub const BURN_WINDOW: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, Clone, Default)]
struct PlatformQuota {
    accounts: HashMap<Account, AccountQuota>,
    /// Keys of named accounts.
    members: HashMap<String, String>,
    /// Named accounts' keys.
    named: HashMap<String, BTreeSet<String>>,
    /// Calls seen spent, by time, over the last [`BURN_WINDOW`].
    burn: VecDeque<(Timestamp, u64)>,
    /// Since when calls are counted in `burn`.
    burn_since: Option<Timestamp>,
}

impl PlatformQuota {
    fn account_of(&self, key: &str) -> Account {
        match self.members.get(key) {
            Some(name) => Account::Named(name.clone()),
            None => Account::Key(key.to_string()),
        }
    }
}

/// The quota views, the account of every key and the leases outstanding, of
/// every platform. See the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct Quotas {
    platforms: HashMap<String, PlatformQuota>,
    leases: BTreeMap<u64, Lease>,
    deadlines: BTreeSet<(Timestamp, u64)>,
    next_lease: u64,
    /// Which shard records' quota entries changed, for saving.
    changes: changes::QuotaChanges,
}

impl Quotas {
    /// Nothing known.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether anything is known of `platform`'s quotas (a view, an account, a
    /// lease). When not, choosing a key is exactly what it was without quotas.
    pub fn knows(&self, platform: &str) -> bool {
        self.platforms
            .get(platform)
            .is_some_and(|p| !p.accounts.is_empty() || !p.members.is_empty())
    }

    /// The account of `key` of `platform`.
    pub fn account_of(&self, platform: &str, key: &str) -> Account {
        match self.platforms.get(platform) {
            Some(p) => p.account_of(key),
            None => Account::Key(key.to_string()),
        }
    }

    /// The keys sharing `key`'s account (itself included).
    pub fn keys_of_account(&self, platform: &str, account: &Account) -> Vec<String> {
        match account {
            Account::Key(k) => vec![k.clone()],
            Account::Named(name) => self
                .platforms
                .get(platform)
                .and_then(|p| p.named.get(name))
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default(),
        }
    }

    /// The state of `account` of `platform`, if anything is known.
    pub fn account(&self, platform: &str, account: &Account) -> Option<&AccountQuota> {
        self.platforms.get(platform)?.accounts.get(account)
    }

    /// Every account of every platform with what is known of it, for saving
    /// and inspection. In no particular order.
    pub fn accounts(&self) -> impl Iterator<Item = (&str, &Account, &AccountQuota)> {
        self.platforms
            .iter()
            .flat_map(|(p, q)| q.accounts.iter().map(move |(a, s)| (p.as_str(), a, s)))
    }

    /// The named account of every key that has one: (platform, key, account).
    pub fn memberships(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.platforms.iter().flat_map(|(p, q)| {
            q.members
                .iter()
                .map(move |(k, a)| (p.as_str(), k.as_str(), a.as_str()))
        })
    }

    /// The accounts of `platform` with what is known of each. In no
    /// particular order.
    pub fn accounts_of(&self, platform: &str) -> impl Iterator<Item = (&Account, &AccountQuota)> {
        self.platforms
            .get(platform)
            .into_iter()
            .flat_map(|q| q.accounts.iter())
    }

    /// The named account of every key of `platform` that has one: (key,
    /// account). In no particular order.
    pub fn members_of(&self, platform: &str) -> impl Iterator<Item = (&str, &str)> {
        self.platforms
            .get(platform)
            .into_iter()
            .flat_map(|q| q.members.iter().map(|(k, a)| (k.as_str(), a.as_str())))
    }

    /// The id of the last lease granted (0 before the first): ids are never
    /// given twice, across restarts too (it is saved).
    pub fn last_lease_id(&self) -> u64 {
        self.next_lease
    }

    /// The leases outstanding, by id.
    pub fn leases(&self) -> impl Iterator<Item = (u64, &Lease)> {
        self.leases.iter().map(|(id, l)| (*id, l))
    }

    /// The lease `id`, if outstanding.
    pub fn lease(&self, id: u64) -> Option<&Lease> {
        self.leases.get(&id)
    }

    /// Puts `key` of `platform` in the named `account` (`None`: its own), and
    /// takes `limit` as a hint of the account's calls per window when nothing
    /// better is known.
    pub fn set_account(
        &mut self,
        now: Timestamp,
        platform: &str,
        key: &str,
        account: Option<&str>,
        limit: Option<u64>,
    ) {
        let was = self.account_of(platform, key);
        let new = match account {
            Some(name) => Account::Named(name.to_string()),
            None => Account::Key(key.to_string()),
        };
        if was != new {
            self.touch_key(platform, key);
        }
        self.tracking(platform, &new, |q| {
            q.set_account_untracked(now, platform, key, account, limit);
        });
    }

    fn set_account_untracked(
        &mut self,
        now: Timestamp,
        platform: &str,
        key: &str,
        account: Option<&str>,
        limit: Option<u64>,
    ) {
        let p = self.platforms.entry(platform.to_string()).or_default();
        if let Some(old) = p.members.remove(key)
            && let Some(set) = p.named.get_mut(&old)
        {
            set.remove(key);
            if set.is_empty() {
                p.named.remove(&old);
            }
        }
        if let Some(name) = account {
            p.members.insert(key.to_string(), name.to_string());
            p.named
                .entry(name.to_string())
                .or_default()
                .insert(key.to_string());
        }
        if let Some(limit) = limit {
            let state = p.accounts.entry(p.account_of(key)).or_default();
            match &mut state.view {
                Some(view) => view.limit = view.limit.or(Some(limit)),
                None => {
                    state.view = Some(QuotaView {
                        limit: Some(limit),
                        remaining: limit,
                        reset: None,
                        reset_header: None,
                        observed_at: now,
                        source: Source::Hint,
                        spent: 0,
                        server_date: None,
                        spent_at: None,
                        resource: None,
                    });
                }
            }
        }
    }

    /// Forgets `key` of `platform` (unpublished): its own account's view, or its
    /// membership of a named account. Its leases run on until they end.
    pub fn forget_key(&mut self, platform: &str, key: &str) {
        if !self.platforms.contains_key(platform) {
            return;
        }
        let account = self.account_of(platform, key);
        if let Account::Named(_) = account {
            self.touch_key(platform, key);
        }
        self.tracking(platform, &account, |q| {
            q.forget_key_untracked(platform, key)
        });
    }

    fn forget_key_untracked(&mut self, platform: &str, key: &str) {
        let Some(p) = self.platforms.get_mut(platform) else {
            return;
        };
        match p.members.remove(key) {
            Some(name) => {
                if let Some(set) = p.named.get_mut(&name) {
                    set.remove(key);
                    if set.is_empty() {
                        p.named.remove(&name);
                        let account = Account::Named(name);
                        if p.accounts.get(&account).is_some_and(|a| a.leases == 0) {
                            p.accounts.remove(&account);
                        }
                    }
                }
            }
            None => {
                let account = Account::Key(key.to_string());
                if p.accounts.get(&account).is_some_and(|a| a.leases == 0) {
                    p.accounts.remove(&account);
                }
            }
        }
        if p.accounts.is_empty() && p.members.is_empty() {
            self.platforms.remove(platform);
        }
    }

    /// The calls of `key`'s account left at `now`, if known.
    pub fn remaining_now(&self, now: Timestamp, platform: &str, key: &str) -> Option<u64> {
        let account = self.account_of(platform, key);
        self.account(platform, &account)?
            .view
            .as_ref()?
            .remaining_now(now)
    }

    /// The calls a lease of `key` could take at `now`: remaining − `floor` −
    /// calls lent in leases outstanding; `None` if the remaining calls are not
    /// known.
    pub fn available(&self, now: Timestamp, platform: &str, key: &str, floor: u64) -> Option<u64> {
        let account = self.account_of(platform, key);
        let state = self.account(platform, &account);
        let remaining = state?.view.as_ref()?.remaining_now(now)?;
        let leased = state.map_or(0, |s| s.leased);
        Some(remaining.saturating_sub(floor).saturating_sub(leased))
    }

    /// How many leases of `key`'s account are outstanding.
    pub fn leases_of(&self, platform: &str, key: &str) -> usize {
        let account = self.account_of(platform, key);
        self.account(platform, &account).map_or(0, |s| s.leases)
    }

    /// When the remaining calls of `account` are at or under `floor` at `now`:
    /// until when its keys are withheld (the reset time, or `now + window` when
    /// none is known, which then becomes the view's reset time). `None` when the
    /// account is above its floor or nothing is known.
    pub fn withhold_until(
        &mut self,
        now: Timestamp,
        platform: &str,
        account: &Account,
        floor: u64,
        window: Duration,
    ) -> Option<Timestamp> {
        self.tracking(platform, account, |q| {
            q.withhold_until_untracked(now, platform, account, floor, window)
        })
    }

    fn withhold_until_untracked(
        &mut self,
        now: Timestamp,
        platform: &str,
        account: &Account,
        floor: u64,
        window: Duration,
    ) -> Option<Timestamp> {
        let state = self
            .platforms
            .get_mut(platform)?
            .accounts
            .get_mut(account)?;
        state.roll(now);
        let view = state.view.as_mut()?;
        let remaining = view.remaining_now(now)?;
        if remaining > floor {
            return None;
        }
        match view.reset {
            Some(r) if r > now => Some(r),
            _ => {
                let until = now.saturating_add(window);
                view.reset = Some(until);
                view.reset_header = None;
                Some(until)
            }
        }
    }

    /// Checks the lease bookkeeping (every account's count and calls agree with
    /// the leases outstanding). For tests and fuzzing.
    pub fn check_consistency(&self) -> Result<(), String> {
        let mut counted: HashMap<(&str, &Account), (usize, u64)> = HashMap::new();
        for lease in self.leases.values() {
            let e = counted
                .entry((lease.platform.as_str(), &lease.account))
                .or_default();
            e.0 += 1;
            e.1 += lease.calls;
        }
        if self.deadlines.len() != self.leases.len() {
            return Err("lease deadlines and leases differ".into());
        }
        for (platform, p) in &self.platforms {
            for (account, state) in &p.accounts {
                let (n, calls) = counted
                    .get(&(platform.as_str(), account))
                    .copied()
                    .unwrap_or_default();
                if n != state.leases || calls != state.leased {
                    return Err(format!(
                        "{platform} {account:?}: {} leases of {} calls counted, {n} of {calls} outstanding",
                        state.leases, state.leased
                    ));
                }
            }
        }
        Ok(())
    }
}
