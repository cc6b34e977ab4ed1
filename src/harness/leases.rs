//! The checker's side of the quota extension: the leases it saw lent (in
//! the replies), their ends (a REPORT with `done`, their deadline), and what
//! the protocol promises of them at every step, derived from the replies seen
//! and the configuration, with the engine's view of each account's remaining
//! calls as the only state read.
//!
//! - a lease reply is well formed: `1 ≤ calls ≤ lease`, `lease_until` the
//!   time of the grant plus the lease duration, an id never given before;
//!   it lends a key that is fresh and whose account is above its floor;
//! - the engine's outstanding leases are those the replies told of, less
//!   those a REPORT ended with `done` and those past their deadline; after a
//!   timer tick, none is past its deadline;
//! - after a step that lends calls of an account, the calls of its leases
//!   outstanding (as the replies said) are at most the remaining calls the
//!   engine knows less the floor, in at most `max_leases` leases; when the
//!   engine knows nothing of the account's quota, each lease is of 1 call.

use super::invariants::Violation;
use crate::engine::Engine;
use crate::pool::KeyState;
use crate::protocol::Reply;
use crate::quota::Account;
use crate::time::Timestamp;
use rand_core::Rng;
use std::collections::{BTreeMap, BTreeSet};

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), Violation> {
    match ok {
        true => Ok(()),
        false => Err(Violation(what())),
    }
}

/// A lease as its reply told it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SeenLease {
    platform: String,
    key: String,
    account: Account,
    calls: u64,
    /// `lease_until`, Unix epoch seconds.
    until: u64,
}

/// A lease lent in one step: what the reply said, and what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The platform asked for.
    pub platform: String,
    /// The key lent.
    pub key: String,
    /// `calls`.
    pub calls: u64,
    /// `lease_id`.
    pub id: u64,
    /// `lease_until`.
    pub until: u64,
    /// The calls asked for (`lease`).
    pub want: u64,
}

impl Grant {
    /// The lease that `reply` lends, for a request of `want` calls of
    /// `platform`; `None` when the reply is not a lease.
    pub fn from_reply(platform: &str, want: u64, reply: &Reply) -> Option<Grant> {
        match reply {
            Reply::Lease {
                key,
                calls,
                lease_id,
                lease_until,
            } => Some(Grant {
                platform: platform.to_owned(),
                key: key.clone(),
                calls: *calls,
                id: *lease_id,
                until: *lease_until,
                want,
            }),
            _ => None,
        }
    }
}

/// A REPORT's end of a lease: `lease_id` with `done`, about `key` of
/// `platform`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// `lease_id`.
    pub id: u64,
    /// `key_str`.
    pub key: String,
    /// `key_platform`.
    pub platform: String,
}

/// What the leases of a run went through, as the checker saw it: so that a
/// test can tell the quota paths were reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Leases lent.
    pub granted: u64,
    /// Of them, lent to a held request.
    pub granted_held: u64,
    /// Leases a REPORT with `done` ended.
    pub ended_by_report: u64,
    /// Leases ended at their deadline.
    pub ended_at_deadline: u64,
    /// Steps that lent calls of an account with a known remaining count.
    pub budgets_checked: u64,
}

impl Tally {
    /// Both tallies together.
    pub fn add(&mut self, other: Tally) {
        self.granted += other.granted;
        self.granted_held += other.granted_held;
        self.ended_by_report += other.ended_by_report;
        self.ended_at_deadline += other.ended_at_deadline;
        self.budgets_checked += other.budgets_checked;
    }
}

/// The leases the checker saw lent and not yet ended.
#[derive(Debug, Clone, Default)]
pub struct LeaseBook {
    leases: BTreeMap<u64, SeenLease>,
    last_id: u64,
    tally: Tally,
}

/// A key handed out at `now` (alone or with a lease) is fresh, and its
/// account, if the engine knows its remaining calls, is above its floor.
pub fn check_handed_out<R: Rng>(
    engine: &Engine<R>,
    now: Timestamp,
    platform: &str,
    key: &str,
) -> Result<(), Violation> {
    let state = engine.pool().state(platform, key, now);
    ensure(state == Some(KeyState::Fresh), || {
        format!("handed out a key in state {state:?}")
    })?;
    let account = engine.quotas().account_of(platform, key);
    let floor = engine.config().quota.floor(platform, &account);
    match engine.quotas().remaining_now(now, platform, key) {
        Some(r) if r <= floor => Err(Violation(format!(
            "handed out a key of {account:?} with {r} calls left, floor {floor}"
        ))),
        _ => Ok(()),
    }
}

impl LeaseBook {
    /// What the leases went through so far.
    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// Counts a lease lent to a held request.
    pub fn count_held_grant(&mut self) {
        self.tally.granted_held += 1;
    }

    /// How many leases the book holds.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// The calls of the leases of `platform` outstanding.
    pub fn lent_on(&self, platform: &str) -> u64 {
        self.leases
            .values()
            .filter(|l| l.platform == platform)
            .map(|l| l.calls)
            .sum()
    }

    /// The `lease_until` of the leases of `platform` outstanding.
    pub fn ends_of(&self, platform: &str) -> Vec<u64> {
        self.leases
            .values()
            .filter(|l| l.platform == platform)
            .map(|l| l.until)
            .collect()
    }

    /// Checks a lease reply given at `now` to a request for `want` calls of
    /// `platform`, before it is recorded.
    pub fn check_grant<R: Rng>(
        &self,
        engine: &Engine<R>,
        now: Timestamp,
        grant: &Grant,
    ) -> Result<(), Violation> {
        check_handed_out(engine, now, &grant.platform, &grant.key)?;
        ensure(grant.calls >= 1 && grant.calls <= grant.want, || {
            format!("a lease of {} calls for {} asked", grant.calls, grant.want)
        })?;
        let until = now
            .saturating_add(engine.config().quota.lease_ttl)
            .as_secs();
        ensure(grant.until == until, || {
            format!("lease_until {} for a lease lent at {now:?}", grant.until)
        })?;
        ensure(grant.id > self.last_id, || {
            format!("lease id {} after {}", grant.id, self.last_id)
        })
    }

    /// Brings the book up to date after a step at `now` that lent `grants`
    /// and ended `ending` (a REPORT's), and checks the leases outstanding and
    /// the budgets of the accounts that lent. `fired`: the step was a timer
    /// tick (which ends the leases that are due).
    pub fn after_step<R: Rng>(
        &mut self,
        engine: &Engine<R>,
        now: Timestamp,
        grants: &[Grant],
        ending: Option<&Ending>,
        fired: bool,
    ) -> Result<(), Violation> {
        let quotas = engine.quotas();
        quotas
            .check_consistency()
            .map_err(|e| Violation(format!("quota bookkeeping: {e}")))?;
        // Leases ended: by the REPORT, or at their deadline.
        let gone: Vec<u64> = self
            .leases
            .keys()
            .copied()
            .filter(|id| quotas.lease(*id).is_none())
            .collect();
        for id in gone {
            let lease = &self.leases[&id];
            let reported = ending
                .is_some_and(|e| e.id == id && e.key == lease.key && e.platform == lease.platform);
            let due = now.as_millis() >= lease.until.saturating_mul(1000);
            ensure(reported || due, || {
                format!(
                    "lease {id} ended before lease_until {} without a REPORT",
                    lease.until
                )
            })?;
            match reported {
                true => self.tally.ended_by_report += 1,
                false => self.tally.ended_at_deadline += 1,
            }
            self.leases.remove(&id);
        }
        if let Some(e) = ending
            && let Some(l) = self.leases.get(&e.id)
        {
            ensure(l.key != e.key || l.platform != e.platform, || {
                format!("lease {} reported done is still outstanding", e.id)
            })?;
        }
        // Leases lent, in the order they were (a reply to the message comes
        // before those to the held requests, but may lend later).
        let mut lent = BTreeSet::new();
        let mut grants: Vec<&Grant> = grants.iter().collect();
        grants.sort_by_key(|g| g.id);
        for g in grants.iter().copied() {
            let lease = quotas
                .lease(g.id)
                .ok_or_else(|| Violation(format!("lease {} lent is not outstanding", g.id)))?;
            ensure(
                lease.key == g.key && lease.platform == g.platform && lease.calls == g.calls,
                || format!("lease {} is not what its reply said", g.id),
            )?;
            ensure(g.id > self.last_id, || {
                format!("lease id {} given twice", g.id)
            })?;
            self.last_id = g.id;
            self.tally.granted += 1;
            lent.insert((g.platform.clone(), lease.account.clone()));
            self.leases.insert(
                g.id,
                SeenLease {
                    platform: g.platform.clone(),
                    key: g.key.clone(),
                    account: lease.account.clone(),
                    calls: g.calls,
                    until: g.until,
                },
            );
        }
        let unseen = quotas
            .leases()
            .find(|(id, _)| !self.leases.contains_key(id));
        if let Some((id, _)) = unseen {
            return Err(Violation(format!(
                "lease {id} is outstanding, no reply told of it"
            )));
        }
        if fired {
            let late = self
                .leases
                .iter()
                .find(|(_, l)| now.as_millis() >= l.until.saturating_add(1).saturating_mul(1000));
            if let Some((id, l)) = late {
                return Err(Violation(format!(
                    "lease {id} outlived its lease_until {} at {now:?}",
                    l.until
                )));
            }
        }
        for (platform, account) in lent {
            self.check_budget(engine, now, &grants, &platform, &account)?;
        }
        Ok(())
    }

    /// The leases of `account` of `platform` lend no more than the engine
    /// knows remains less the floor, in at most `max_leases` leases; or, when
    /// nothing is known, the leases lent now are of 1 call each.
    fn check_budget<R: Rng>(
        &mut self,
        engine: &Engine<R>,
        now: Timestamp,
        grants: &[&Grant],
        platform: &str,
        account: &Account,
    ) -> Result<(), Violation> {
        let config = &engine.config().quota;
        let mine: Vec<&SeenLease> = self
            .leases
            .values()
            .filter(|l| l.platform == platform && &l.account == account)
            .collect();
        ensure(mine.len() <= config.max_leases, || {
            format!(
                "{account:?} has {} leases, at most {}",
                mine.len(),
                config.max_leases
            )
        })?;
        let lent: u64 = mine.iter().map(|l| l.calls).sum();
        let floor = config.floor(platform, account);
        let remaining = engine
            .quotas()
            .account(platform, account)
            .and_then(|a| a.view.as_ref())
            .and_then(|v| v.remaining_now(now));
        match remaining {
            Some(r) => {
                ensure(lent.saturating_add(floor) <= r, || {
                    format!("{account:?} lends {lent} calls with {r} remaining, floor {floor}")
                })?;
                self.tally.budgets_checked += 1;
                Ok(())
            }
            None => {
                let big = grants.iter().find(|g| {
                    g.calls > 1
                        && self
                            .leases
                            .get(&g.id)
                            .is_some_and(|l| l.platform == platform && &l.account == account)
                });
                ensure(big.is_none(), || {
                    format!("a lease of {big:?} calls of {account:?}, whose quota is unknown")
                })
            }
        }
    }
}
