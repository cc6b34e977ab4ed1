//! The quota side of the [`Engine`]: leases, reports, accounts and
//! floors. The bookkeeping is [`Quotas`]'; what it means for the keys (a key
//! withheld at its floor, the keys of one account expired together) is here.

use super::wire::Refusal;
use super::{Engine, KeyEvent, wait_seconds};
use crate::pool::{Assignment, Published, Weight};
use crate::protocol::{PlatformStatus, Reply, Request};
use crate::quota::{Account, LeaseGrant, LeaseReturn, Observation, Quotas, Reported, Source};
use crate::time::Timestamp;
use rand_core::Rng;
use std::collections::BTreeSet;

/// What a request for a lease ([`Engine::lease`]) gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leased {
    /// A key and the calls lent with it.
    Granted {
        /// The key.
        key: String,
        /// The lease.
        lease: LeaseGrant,
    },
    /// A key without a lease: leases are switched off
    /// ([`QuotaConfig::max_leases`](crate::quota::QuotaConfig::max_leases) is 0).
    Key(String),
    /// No key can lend a call now; ask again at `refresh_at` (the earliest
    /// refresh of a key or end of a lease).
    Wait {
        /// When.
        refresh_at: Timestamp,
    },
    /// No key was ever published for this platform.
    UnknownPlatform,
    /// The platform has no fresh and no expired key.
    NoKeys,
}

impl<R: Rng> Engine<R> {
    /// The quota views, accounts and leases, for inspection (and saving).
    pub fn quotas(&self) -> &Quotas {
        &self.quota
    }

    /// Replaces the quota views, accounts and leases with saved ones (after a
    /// restart). Like [`restore`](Self::restore), it emits no event.
    pub fn restore_quotas(&mut self, quotas: Quotas) {
        self.quota = quotas;
    }

    /// Lends a key of `platform` and up to `want` calls with it at `now`: never
    /// more than its account's remaining calls less its floor less the calls
    /// already lent, and never to an account with
    /// [`max_leases`](crate::quota::QuotaConfig::max_leases) leases outstanding.
    /// A key whose quota is unknown lends 1 call (the worker's REPORT then
    /// tells the rest). Keys are chosen by the platform's strategy among those
    /// that can lend. Counted in [`Stats::assigned`](super::Stats::assigned).
    pub fn lease(&mut self, now: Timestamp, platform: &str, want: u64) -> Leased {
        if !self.pool.has_platform(platform) {
            self.events.push_back(super::Event::UnknownPlatform {
                platform: platform.to_string(),
            });
        }
        self.settle_withheld(now);
        self.withhold_at_floor(now, platform);
        let cfg = &self.config.quota;
        if cfg.max_leases == 0 {
            let pick = self.draw(now, platform);
            return unleased(self.pool.picked(platform, pick));
        }
        let selection = cfg.selection(platform, self.config.selection);
        let fallback = self.quota.next_lease_end_of(platform);
        let quota = &self.quota;
        let chosen = self
            .pool
            .choose(platform, now, &mut self.rng, selection, fallback, |key| {
                if quota.leases_of(platform, key) >= cfg.max_leases {
                    return Weight::Calls(0);
                }
                let floor = cfg.floor(platform, &quota.account_of(platform, key));
                match quota.available(now, platform, key, floor) {
                    Some(n) => Weight::Calls(n),
                    None => Weight::Unknown,
                }
            });
        let key = match chosen {
            Assignment::Key(k) => k.to_string(),
            other => return unleased(other),
        };
        let floor = cfg.floor(platform, &self.quota.account_of(platform, &key));
        let (max, ttl) = (cfg.max_leases, cfg.lease_ttl);
        match self.quota.grant(now, platform, &key, want, floor, max, ttl) {
            Some(lease) => {
                self.stats.assigned += 1;
                if let Some(p) = self.probe.as_deref_mut() {
                    p.mark_used(now, platform, &key);
                }
                Leased::Granted { key, lease }
            }
            // The key was chosen because it can lend: not reached.
            None => Leased::Wait {
                refresh_at: fallback.unwrap_or(now),
            },
        }
    }

    /// Takes in what the platform said about `key`'s quota (a REPORT), and the
    /// end of the lease it is about (`done`: its unused calls return). When the
    /// account is then at or under its floor, its keys are withheld until the
    /// reset, as expired keys ([`KeyEvent::Expired`]). What is said of a key
    /// that is not published is ignored (its lease still ends).
    pub fn report(
        &mut self,
        now: Timestamp,
        platform: &str,
        key: &str,
        observation: &Observation,
        lease: Option<LeaseReturn>,
    ) -> Reported {
        self.report_from(now, platform, key, observation, lease, Source::Report)
    }

    /// [`report`](Self::report), learnt from `source` (a probe's answer is
    /// [`Source::Probe`]).
    pub(super) fn report_from(
        &mut self,
        now: Timestamp,
        platform: &str,
        key: &str,
        observation: &Observation,
        lease: Option<LeaseReturn>,
        source: Source,
    ) -> Reported {
        let ended = lease.is_some_and(|l| {
            l.done
                && self
                    .quota
                    .lease(l.lease_id)
                    .is_some_and(|x| x.platform == platform && x.key == key)
        });
        // What is said of a key not published is not kept: no state grows from
        // reports of keys the pool does not have.
        let nothing = Observation::default();
        let observation = match self.pool.state(platform, key, now) {
            Some(_) => observation,
            None => &nothing,
        };
        let outcome = self
            .quota
            .report_from(now, platform, key, observation, lease, source);
        if ended || outcome != Reported::Ignored {
            self.stats.changes += 1;
        }
        let account = self.quota.account_of(platform, key);
        self.withhold(now, platform, &account);
        self.serve_held_after_change(now);
        outcome
    }

    /// [`publish`](Self::publish), and puts the key in `account` (`None`: its
    /// own) with `limit` calls per window as a hint (PUBLISH's `account` and
    /// `limit`). A key that joins an account at its floor is withheld with it,
    /// before held requests are served.
    pub fn publish_account(
        &mut self,
        now: Timestamp,
        platform: &str,
        key: &str,
        account: Option<&str>,
        limit: Option<u64>,
    ) -> Published {
        let outcome = self.publish_unserved(now, platform, key);
        if self.pool.has_platform(platform) {
            self.quota.set_account(now, platform, key, account, limit);
            self.stats.changes += 1;
            let account = self.quota.account_of(platform, key);
            self.withhold(now, platform, &account);
        }
        self.serve_held_after_change(now);
        outcome
    }

    /// The calls the fresh keys of `platform` can lend at `now`, each account
    /// counted once; `None` when nothing is known of any of them.
    pub(super) fn lendable(&self, now: Timestamp, platform: &str) -> Option<u64> {
        let mut seen = BTreeSet::new();
        let mut total: Option<u64> = None;
        for key in self.pool.fresh_keys(platform) {
            let account = self.quota.account_of(platform, key);
            let floor = self.config.quota.floor(platform, &account);
            if seen.insert(account)
                && let Some(n) = self.quota.available(now, platform, key, floor)
            {
                total = Some(total.unwrap_or(0).saturating_add(n));
            }
        }
        total
    }

    /// Ends the leases due at `now` (counted as fully used) and withholds the
    /// accounts this takes to their floor.
    pub(super) fn end_due_leases(&mut self, now: Timestamp) {
        let ended = self.quota.end_due_leases(now);
        if ended.is_empty() {
            return;
        }
        self.stats.changes += 1;
        let accounts: BTreeSet<(String, Account)> =
            ended.into_iter().map(|l| (l.platform, l.account)).collect();
        for (platform, account) in accounts {
            self.withhold(now, &platform, &account);
        }
    }

    /// Withholds the fresh keys of `platform` whose account is at or under
    /// its floor at `now`: those that came back at a reset to a limit at or
    /// under the floor (they would lend nothing) are withheld until the next.
    pub(super) fn withhold_at_floor(&mut self, now: Timestamp, platform: &str) {
        if !self.quota.knows(platform) {
            return;
        }
        // Keys whose refresh time has come are fresh from now.
        let _ = self.pool.counts(platform, now);
        let mut spent = BTreeSet::new();
        for key in self.pool.fresh_keys(platform) {
            let account = self.quota.account_of(platform, key);
            let floor = self.config.quota.floor(platform, &account);
            if self
                .quota
                .remaining_now(now, platform, key)
                .is_some_and(|r| r <= floor)
            {
                spent.insert(account);
            }
        }
        for account in spent {
            self.withhold(now, platform, &account);
        }
    }

    /// Withholds the keys of `account` until its reset when it is at or under
    /// its floor.
    fn withhold(&mut self, now: Timestamp, platform: &str, account: &Account) {
        let floor = self.config.quota.floor(platform, account);
        let window = self.config.quota.window;
        let Some(until) = self
            .quota
            .withhold_until(now, platform, account, floor, window)
        else {
            return;
        };
        let until = until.min(now.saturating_add(self.config.max_expiry));
        for key in self.quota.keys_of_account(platform, account) {
            if self.pool.expire(platform, &key, until, now) != crate::pool::Expired::Unchanged {
                self.key_event(platform, &key, KeyEvent::Expired { refresh_at: until });
            }
        }
    }

    /// An EXPIRE of a key of a named account expires the account's other keys
    /// too: they share its quota.
    pub(super) fn expire_account_siblings(
        &mut self,
        now: Timestamp,
        platform: &str,
        key: &str,
        refresh_at: Timestamp,
    ) {
        let account = self.quota.account_of(platform, key);
        if !matches!(account, Account::Named(_)) {
            return;
        }
        for other in self.quota.keys_of_account(platform, &account) {
            if other != key
                && self.pool.expire(platform, &other, refresh_at, now)
                    != crate::pool::Expired::Unchanged
            {
                self.key_event(platform, &other, KeyEvent::Expired { refresh_at });
            }
        }
    }

    /// Adds the quota forecast of each platform to STATUS.
    pub(super) fn add_forecasts(&mut self, now: Timestamp, status: &mut [PlatformStatus]) {
        for p in status {
            let f = self.quota.forecast(now, &p.platform);
            p.remaining = f.remaining;
            p.leased = Some(f.leased).filter(|&n| n > 0);
            p.burn_per_hour = f.burn_per_hour;
            p.dry_at = f.dry_at.map(|t| t.as_secs());
        }
    }

    /// The wire side of the quota requests: NEW with `lease`, REPORT.
    pub(super) fn on_quota_request(
        &mut self,
        now: Timestamp,
        req: Request,
        reply_subject: Option<&str>,
    ) {
        match req {
            Request::Lease {
                platform,
                reply,
                lease,
                hold_ms,
            } => {
                let dest = self.destination(&reply, reply_subject, false);
                let want = lease;
                let answer = match self.lease(now, &platform, lease) {
                    Leased::Granted { key, lease } => Reply::Lease {
                        key,
                        calls: lease.calls,
                        lease_id: lease.id,
                        lease_until: lease.until.as_secs(),
                    },
                    Leased::Key(key) => Reply::Key(key),
                    Leased::Wait { refresh_at } => {
                        if let Some(ms) = hold_ms
                            && self.hold(now, &platform, &dest, &reply, ms, Some(want))
                        {
                            return;
                        }
                        self.stats.waits += 1;
                        Reply::Wait(wait_seconds(now, refresh_at))
                    }
                    Leased::UnknownPlatform => {
                        return self.refuse(dest, &reply, &platform, Refusal::UnknownPlatform);
                    }
                    Leased::NoKeys => {
                        return self.refuse(dest, &reply, &platform, Refusal::NoKeys);
                    }
                };
                self.forget_resent(&platform, &reply);
                self.send(dest, &answer, reply.request_id.as_ref());
            }
            Request::Report {
                key,
                platform,
                observation,
                lease,
                reply,
            } => {
                // The answer goes first: the report may release held
                // requests, whose answers follow it.
                if let Some(reply) = reply {
                    let dest = self.destination(&reply, reply_subject, false);
                    self.send(dest, &Reply::Ok, reply.request_id.as_ref());
                }
                self.report(now, &platform, &key, &observation, lease);
            }
            Request::New { .. } | Request::Expire { .. } | Request::Invalidate { .. } => {}
        }
    }
}

fn unleased(a: Assignment<'_>) -> Leased {
    match a {
        Assignment::Key(k) => Leased::Key(k.to_string()),
        Assignment::Wait { refresh_at } => Leased::Wait { refresh_at },
        Assignment::UnknownPlatform => Leased::UnknownPlatform,
        Assignment::NoKeys => Leased::NoKeys,
    }
}
