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

use crate::mask::Masked;
use crate::pool::Selection;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

mod snapshot;
#[cfg(test)]
mod tests;

pub use snapshot::{AccountSnapshot, LeaseSnapshot, QuotaSnapshot};

/// The largest clock skew between a platform and us that is believed: a
/// `server_date` further off is taken as this far off.
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);
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
/// Two reset times closer than this are the same window (reset headers are
/// whole seconds, and the skew estimate moves a little between reports).
const SAME_WINDOW_MS: u64 = 2_000;

/// The quota settings of an [`Engine`](crate::Engine): floors, lease limits, and
/// the choice strategy of each platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaConfig {
    /// Calls kept in reserve per platform: a key whose account has this many
    /// remaining calls or fewer is withheld until its reset, and no lease takes
    /// it below. Platforms not named have no floor (0).
    pub floors: BTreeMap<String, u64>,
    /// Floors of single accounts (platform, then account name), over the
    /// platform's.
    pub account_floors: BTreeMap<String, BTreeMap<String, u64>>,
    /// The choice strategy of single platforms, over
    /// [`EngineConfig::selection`](crate::EngineConfig::selection).
    pub selections: BTreeMap<String, Selection>,
    /// The most leases outstanding at once per account; 0 means no leases.
    pub max_leases: usize,
    /// How long a lease lasts; after it the lease counts as fully used.
    pub lease_ttl: Duration,
    /// The quota window assumed when no reset time is known.
    pub window: Duration,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            floors: BTreeMap::new(),
            account_floors: BTreeMap::new(),
            selections: BTreeMap::new(),
            max_leases: DEFAULT_MAX_LEASES,
            lease_ttl: DEFAULT_LEASE_TTL,
            window: DEFAULT_WINDOW,
        }
    }
}

impl QuotaConfig {
    /// The floor of `account` of `platform`.
    pub fn floor(&self, platform: &str, account: &Account) -> u64 {
        if let Account::Named(name) = account
            && let Some(f) = self.account_floors.get(platform).and_then(|m| m.get(name))
        {
            return *f;
        }
        self.floors.get(platform).copied().unwrap_or(0)
    }

    /// The choice strategy of `platform`, `default` when none is set for it.
    pub fn selection(&self, platform: &str, default: Selection) -> Selection {
        self.selections.get(platform).copied().unwrap_or(default)
    }
}

/// Whose quota a key spends: its own, or that of a named account (PUBLISH's
/// `account`). `Debug` masks the key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Account {
    /// A key that is its own account.
    Key(String),
    /// An account named by PUBLISH; its keys share one quota.
    Named(String),
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Account::Key(k) => write!(f, "Key({})", Masked(k)),
            Account::Named(n) => write!(f, "Named({n:?})"),
        }
    }
}

/// Where a [`QuotaView`] was learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// A worker's REPORT of the platform's rate-limit headers.
    Report,
    /// A probe of the platform's rate-limit endpoint (reported like a REPORT).
    Probe,
    /// The pool's own accounting of the calls it lent.
    Leases,
    /// PUBLISH's `limit`, until a report says otherwise.
    Hint,
}

/// What the platform said about a key's quota: the rate-limit headers of one
/// response. Times are the platform's clock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// Calls left in the window (`x-ratelimit-remaining`).
    pub remaining: Option<u64>,
    /// Calls per window (`x-ratelimit-limit`).
    pub limit: Option<u64>,
    /// When the window resets (`x-ratelimit-reset`), on the platform's clock.
    pub reset: Option<Timestamp>,
    /// Which quota (`x-ratelimit-resource`: `core`, `search`, `graphql`, …).
    pub resource: Option<String>,
    /// The response's `Date`, on the platform's clock.
    pub server_date: Option<Timestamp>,
}

/// What a worker says about a lease in a REPORT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseReturn {
    /// The lease.
    pub lease_id: u64,
    /// Calls made with it (all of them when not said).
    pub used: Option<u64>,
    /// Whether the lease ends now (its unused calls return to the account).
    pub done: bool,
}

/// The difference between a platform's clock and ours, learnt from the `Date`
/// of its responses: smoothed, and bounded by [`MAX_SKEW`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skew {
    /// The platform's clock minus ours, in milliseconds.
    pub offset_ms: i64,
    /// How many dates it was learnt from.
    pub samples: u32,
}

impl Skew {
    /// Takes in one `Date` (whole seconds: its middle is used) received at `now`.
    pub fn observe(&mut self, server_date: Timestamp, now: Timestamp) {
        let max = MAX_SKEW.as_millis() as i64;
        let date = i128::from(server_date.as_millis()) + 500;
        let sample = (date - i128::from(now.as_millis())).clamp(-(max as i128), max as i128) as i64;
        if self.samples == 0 {
            self.offset_ms = sample;
        } else {
            self.offset_ms += (sample - self.offset_ms) / 4;
        }
        self.offset_ms = self.offset_ms.clamp(-max, max);
        self.samples = self.samples.saturating_add(1);
    }

    /// A platform time on our clock.
    pub fn to_local(&self, platform_time: Timestamp) -> Timestamp {
        shift(platform_time, -self.offset_ms)
    }

    /// One of our times on the platform's clock.
    pub fn to_platform(&self, local: Timestamp) -> Timestamp {
        shift(local, self.offset_ms)
    }
}

/// How reset time `a` compares with `b`: times closer than [`SAME_WINDOW_MS`]
/// are the same window.
fn window_order(a: Timestamp, b: Timestamp) -> std::cmp::Ordering {
    let (a, b) = (a.as_millis(), b.as_millis());
    if a.saturating_add(SAME_WINDOW_MS) < b {
        std::cmp::Ordering::Less
    } else if a > b.saturating_add(SAME_WINDOW_MS) {
        std::cmp::Ordering::Greater
    } else {
        std::cmp::Ordering::Equal
    }
}

fn shift(t: Timestamp, ms: i64) -> Timestamp {
    if ms >= 0 {
        Timestamp::from_millis(t.as_millis().saturating_add(ms.unsigned_abs()))
    } else {
        Timestamp::from_millis(t.as_millis().saturating_sub(ms.unsigned_abs()))
    }
}

/// What is known of one account's quota window. Times are ours (converted with
/// the account's [`Skew`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaView {
    /// Calls per window, if known.
    pub limit: Option<u64>,
    /// Calls left when it was observed.
    pub remaining: u64,
    /// When the window resets, if known.
    pub reset: Option<Timestamp>,
    /// The reset time as the platform said it (its clock): the window's name.
    /// Kept when the window has ended and `reset` is `None`, for the next
    /// window's reports are known by a later one.
    pub reset_header: Option<Timestamp>,
    /// When it was observed.
    pub observed_at: Timestamp,
    /// From what.
    pub source: Source,
    /// Calls counted against it since: leases ended after the observation.
    pub spent: u64,
    /// The latest `Date` of a report of this window, on the platform's clock.
    pub server_date: Option<Timestamp>,
    /// The latest time calls were counted in `spent`.
    pub spent_at: Option<Timestamp>,
    /// The resource the reports are about (the first one said).
    pub resource: Option<String>,
}

impl QuotaView {
    /// The calls left at `now`: the observed remaining less the calls counted
    /// since, back to the limit once the reset time has come (`None` then if the
    /// limit is unknown).
    pub fn remaining_now(&self, now: Timestamp) -> Option<u64> {
        match self.reset {
            Some(reset) if now >= reset => self.limit,
            _ => Some(self.remaining.saturating_sub(self.spent)),
        }
    }

    /// Whether the window has reset by `now`.
    pub fn has_reset(&self, now: Timestamp) -> bool {
        self.reset.is_some_and(|r| now >= r)
    }
}

/// One account's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountQuota {
    /// The current window, if anything is known.
    pub view: Option<QuotaView>,
    /// The platform's clock skew, as this account's reports show it.
    pub skew: Skew,
    /// Leases outstanding.
    pub leases: usize,
    /// Calls lent in the leases outstanding.
    pub leased: u64,
}

impl AccountQuota {
    /// Starts the next window once the reset time has come: the limit, with
    /// nothing counted yet and its reset unknown; forgets the view when the
    /// limit is unknown.
    pub fn roll(&mut self, now: Timestamp) {
        let Some(view) = &mut self.view else {
            return;
        };
        let Some(reset) = view.reset.filter(|r| now >= *r) else {
            return;
        };
        match view.limit {
            Some(limit) => {
                view.remaining = limit;
                view.spent = 0;
                view.spent_at = None;
                view.observed_at = reset;
                view.source = Source::Leases;
                // The header stays: it names the window that ended, so that
                // late reports of it are known for what they are.
                view.reset = None;
            }
            None => self.view = None,
        }
    }
}

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

/// What a report did to the view of its account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    /// The view now says what the report said.
    Updated,
    /// The report was older than what is known; it could only lower the count,
    /// and did.
    Lowered,
    /// The report was older than what is known (or about another resource, or
    /// said nothing about the quota); the view is unchanged.
    Ignored,
}

/// The forecast of one platform, for STATUS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forecast {
    /// The known remaining calls (accounts with a view), if any is known.
    pub remaining: Option<u64>,
    /// Calls lent in leases outstanding.
    pub leased: u64,
    /// Calls spent per hour lately, if any were seen.
    pub burn_per_hour: Option<u64>,
    /// When the known remaining calls run out at that rate.
    pub dry_at: Option<Timestamp>,
}

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

    fn record_burn(&mut self, now: Timestamp, calls: u64) {
        if calls == 0 {
            return;
        }
        self.burn.push_back((now, calls));
        self.trim_burn(now);
    }

    fn trim_burn(&mut self, now: Timestamp) {
        let from = Timestamp::from_millis(
            now.as_millis()
                .saturating_sub(BURN_WINDOW.as_millis() as u64),
        );
        while self.burn.front().is_some_and(|(t, _)| *t < from) {
            self.burn.pop_front();
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

    /// Takes in what the platform said about `key`'s quota at `now`, and ends
    /// the lease the report is about when it says `done` (a lease of another
    /// key is left alone). Returns what the report did to the view.
    pub fn report(
        &mut self,
        now: Timestamp,
        platform: &str,
        key: &str,
        obs: &Observation,
        lease: Option<LeaseReturn>,
    ) -> Reported {
        if let Some(ret) = lease
            && ret.done
            && self
                .leases
                .get(&ret.lease_id)
                .is_some_and(|l| l.platform == platform && l.key == key)
        {
            self.end_lease(now, ret.lease_id, ret.used);
        }
        let p = self.platforms.entry(platform.to_string()).or_default();
        let account = p.account_of(key);
        if obs.remaining.is_none() && obs.server_date.is_none() && obs.limit.is_none() {
            if p.members.is_empty() && p.accounts.is_empty() {
                self.platforms.remove(platform);
            }
            return Reported::Ignored;
        }
        p.burn_since.get_or_insert(now);
        let state = p.accounts.entry(account).or_default();
        state.roll(now);
        // Older than what is known: an earlier `Date` than a report already
        // taken, or than calls counted since (a response that waited to be
        // reported while a lease ended). Judged with the skew known before it,
        // and such a report teaches no skew.
        let older = match (obs.server_date, &state.view) {
            (Some(date), Some(view)) => {
                view.server_date.is_some_and(|known| date < known)
                    || view.spent_at.is_some_and(|t| {
                        date.as_millis().saturating_add(1000)
                            < state.skew.to_platform(t).as_millis()
                    })
            }
            _ => false,
        };
        if let Some(date) = obs.server_date
            && !older
        {
            state.skew.observe(date, now);
        }
        let skew = state.skew;
        let Some(remaining) = obs.remaining else {
            if let (Some(view), Some(limit)) = (&mut state.view, obs.limit) {
                view.limit = Some(limit);
            }
            return Reported::Ignored;
        };
        let reset = obs.reset.map(|r| skew.to_local(r));
        // A window that has ended says nothing of the current one.
        if reset.is_some_and(|r| r <= now) {
            return Reported::Ignored;
        }
        let fresh_view = QuotaView {
            limit: obs.limit,
            remaining,
            reset,
            reset_header: obs.reset,
            observed_at: now,
            source: Source::Report,
            spent: 0,
            server_date: obs.server_date,
            spent_at: None,
            resource: obs.resource.clone(),
        };
        let Some(view) = &mut state.view else {
            state.view = Some(fresh_view);
            return Reported::Updated;
        };
        if let (Some(mine), Some(theirs)) = (&view.resource, &obs.resource)
            && mine != theirs
        {
            return Reported::Ignored;
        }
        let before = view.remaining_now(now);
        // Which window is the report about? The reset headers say it (the same
        // window has the same header); without them, the converted times.
        let order = match (obs.reset, view.reset_header, reset, view.reset) {
            (Some(a), Some(b), _, _)
            | (None, _, Some(a), Some(b))
            | (_, None, Some(a), Some(b)) => window_order(a, b),
            (Some(_), None, _, None) => std::cmp::Ordering::Equal,
            // No reset said: a report after the known reset is of a new window.
            (None, _, _, _) if view.has_reset(now) => std::cmp::Ordering::Greater,
            _ => std::cmp::Ordering::Equal,
        };
        // A rolled view (reset passed, header kept) is past its header's window.
        let rolled = view.reset.is_none() && view.reset_header.is_some();
        if order == std::cmp::Ordering::Less
            || (rolled && obs.reset.is_some() && order == std::cmp::Ordering::Equal)
        {
            return Reported::Ignored;
        }
        if order == std::cmp::Ordering::Greater || view.source == Source::Hint {
            let resource = view.resource.clone().or(fresh_view.resource.clone());
            let limit = fresh_view.limit.or(view.limit);
            *view = QuotaView {
                limit,
                resource,
                ..fresh_view
            };
            if let Some(b) = before.filter(|_| order == std::cmp::Ordering::Equal) {
                p.record_burn(now, b.saturating_sub(remaining));
            }
            return Reported::Updated;
        }
        let outcome = if older {
            match before {
                Some(b) if remaining < b => {
                    view.remaining = remaining;
                    view.spent = 0;
                    view.source = Source::Report;
                    Reported::Lowered
                }
                _ => return Reported::Ignored,
            }
        } else {
            view.remaining = remaining;
            view.spent = 0;
            view.observed_at = now;
            view.source = Source::Report;
            view.server_date = obs.server_date.max(view.server_date);
            if reset.is_some() {
                view.reset = reset;
                view.reset_header = obs.reset;
            }
            Reported::Updated
        };
        view.limit = obs.limit.or(view.limit);
        if let Some(b) = before {
            p.record_burn(now, b.saturating_sub(remaining));
        }
        outcome
    }

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
        Some(LeaseGrant { id, calls, until })
    }

    /// Ends lease `id` at `now`, counting `used` calls against its account (all
    /// of them when `None`). Returns the lease, or `None` if it is not
    /// outstanding.
    pub fn end_lease(&mut self, now: Timestamp, id: u64, used: Option<u64>) -> Option<Lease> {
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

    /// The known remaining calls, calls lent, burn rate and dry time of
    /// `platform` at `now`.
    pub fn forecast(&mut self, now: Timestamp, platform: &str) -> Forecast {
        let Some(p) = self.platforms.get_mut(platform) else {
            return Forecast::default();
        };
        p.trim_burn(now);
        let mut remaining = None;
        let mut leased = 0u64;
        for state in p.accounts.values() {
            leased = leased.saturating_add(state.leased);
            if let Some(r) = state.view.as_ref().and_then(|v| v.remaining_now(now)) {
                let left = r.saturating_sub(state.leased);
                remaining = Some(remaining.unwrap_or(0u64).saturating_add(left));
            }
        }
        let burnt: u64 = p.burn.iter().map(|(_, c)| *c).sum();
        let since = p.burn_since;
        let burn_per_hour = p.burn.front().map(|(first, _)| {
            let from = since.unwrap_or(*first).min(*first);
            let span = now
                .as_millis()
                .saturating_sub(from.as_millis())
                .clamp(60_000, BURN_WINDOW.as_millis() as u64);
            burnt.saturating_mul(3_600_000) / span
        });
        let dry_at = match (remaining, burn_per_hour) {
            (Some(r), Some(rate)) if rate > 0 => {
                let ms = u128::from(r) * 3_600_000 / u128::from(rate);
                Some(Timestamp::from_millis(
                    now.as_millis()
                        .saturating_add(u64::try_from(ms).unwrap_or(u64::MAX)),
                ))
            }
            _ => None,
        };
        Forecast {
            remaining,
            leased,
            burn_per_hour,
            dry_at,
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
