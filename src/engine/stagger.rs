//! Staggered waits: when no key of a platform is fresh, the waiting requests
//! are spread over the platform's rate-limited keys, so that each key wakes
//! about its share of them instead of all of them waking at the earliest
//! refresh onto the one key that came back (a herd: every holder of that key
//! then runs into its limit at the same moment).
//!
//! The rule ([`Stagger::aim`]): with `W` requests waiting (this one included)
//! and `K` keys rate limited, each key takes at most `⌈W / K⌉` of them; a
//! request is aimed at the key that refreshes earliest among those with room,
//! and told to ask again at its refresh. One waiter waits for the earliest
//! refresh, exactly as without a stagger; a crowd of `W` is spread over the
//! first `min(W, K)` keys to refresh.
//!
//! A waiter is known by its requester and request ids: asking again before
//! its time replaces its earlier aim instead of counting twice, and asking
//! again at its time (up to [`GRACE`] later) finds the key it was aimed at
//! ([`Stagger::take`]), so that the engine can hand it that key rather than
//! one that others hold already. Nothing here reads a clock.

use crate::protocol::Id;
use crate::time::Timestamp;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// The most aims kept at once (over all platforms); beyond it a waiter is
/// told the earliest refresh and not counted, so that a flood of requests
/// with made-up ids cannot grow the engine's memory.
pub(super) const MAX_AIMS: usize = 100_000;

/// How long after its time an aim is kept for its waiter to ask again: wait
/// hints are whole seconds, and a worker's NEW takes a moment to arrive.
pub(super) const GRACE: Duration = Duration::from_secs(5);

/// Who waits: a `requester_id` and, when given, a `request_id`.
pub(super) type Waiter = (Id, Option<Id>);

#[derive(Debug)]
struct Aim {
    waiter: Option<Waiter>,
    key: String,
}

/// The aims of one platform.
#[derive(Debug, Default)]
struct PlatformAims {
    /// Aims whose time is still to come, by `(time, sequence number)`.
    pending: BTreeMap<(Timestamp, u64), Aim>,
    /// Aims whose time has come, kept for [`GRACE`] for their waiter.
    due: BTreeMap<(Timestamp, u64), Aim>,
    /// How many pending aims each key has.
    per_key: HashMap<String, u64>,
    /// The aim of each known waiter, pending or due.
    by_waiter: HashMap<Waiter, (Timestamp, u64)>,
}

impl PlatformAims {
    fn len(&self) -> usize {
        self.pending.len() + self.due.len()
    }

    /// Moves the aims whose time has come by `now` to `due`, and forgets
    /// those past their grace.
    fn advance(&mut self, now: Timestamp) {
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (at, aim) = entry.remove_entry();
            self.uncount(&aim.key);
            self.due.insert(at, aim);
        }
        while let Some(entry) = self.due.first_entry() {
            if entry.key().0.saturating_add(GRACE) > now {
                break;
            }
            let (at, aim) = entry.remove_entry();
            self.unlink(at, &aim);
        }
    }

    fn uncount(&mut self, key: &str) {
        if let Some(c) = self.per_key.get_mut(key) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.per_key.remove(key);
            }
        }
    }

    fn unlink(&mut self, at: (Timestamp, u64), aim: &Aim) {
        if let Some(w) = &aim.waiter
            && self.by_waiter.get(w) == Some(&at)
        {
            self.by_waiter.remove(w);
        }
    }

    /// Removes the aim at `at`, pending or due; returns it.
    fn remove(&mut self, at: (Timestamp, u64)) -> Option<Aim> {
        let aim = match self.pending.remove(&at) {
            Some(aim) => {
                self.uncount(&aim.key);
                aim
            }
            None => self.due.remove(&at)?,
        };
        self.unlink(at, &aim);
        Some(aim)
    }
}

/// The aims of the waiting requests of every platform. See the
/// [module docs](self).
#[derive(Debug, Default)]
pub(super) struct Stagger {
    platforms: HashMap<String, PlatformAims>,
    /// Aims kept, over all platforms.
    len: usize,
    next: u64,
}

impl Stagger {
    /// How many aims are kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Runs `f` on the aims of `platform` after moving them on to `now`,
    /// keeping the count of aims right.
    fn with<T>(
        &mut self,
        now: Timestamp,
        platform: &str,
        f: impl FnOnce(&mut PlatformAims) -> T,
    ) -> Option<T> {
        let p = self.platforms.get_mut(platform)?;
        let before = p.len();
        p.advance(now);
        let out = f(p);
        self.len = self.len + p.len() - before;
        if p.len() == 0 {
            self.platforms.remove(platform);
        }
        Some(out)
    }

    /// Aims a request of `platform` that found no fresh key at `now` at one of
    /// `limited` (the rate-limited keys of the platform and their refresh
    /// times, earliest first, `count` of them), and returns that refresh time:
    /// when the request should ask again. `None` when no key refreshes after
    /// `now`.
    pub(super) fn aim<'a>(
        &mut self,
        now: Timestamp,
        platform: &str,
        waiter: Option<Waiter>,
        count: usize,
        limited: impl Iterator<Item = (Timestamp, &'a str)>,
    ) -> Option<Timestamp> {
        let mut limited = limited.filter(|(t, _)| *t > now).peekable();
        let (earliest, first) = *limited.peek()?;
        self.platforms.entry(platform.to_string()).or_default();
        if let Some(w) = &waiter {
            self.with(now, platform, |p| {
                if let Some(old) = p.by_waiter.get(w).copied() {
                    p.remove(old);
                }
            });
        }
        if self.len >= MAX_AIMS {
            return Some(earliest);
        }
        let p = self.platforms.entry(platform.to_string()).or_default();
        let before = p.len();
        p.advance(now);
        let waiting = p.pending.len() as u64 + 1;
        let share = waiting.div_ceil(count.max(1) as u64);
        let (at, key) = limited
            .find(|(_, key)| p.per_key.get(*key).copied().unwrap_or(0) < share)
            .unwrap_or((earliest, first));
        let seq = self.next;
        self.next += 1;
        *p.per_key.entry(key.to_string()).or_default() += 1;
        if let Some(w) = &waiter {
            p.by_waiter.insert(w.clone(), (at, seq));
        }
        p.pending.insert(
            (at, seq),
            Aim {
                waiter,
                key: key.to_string(),
            },
        );
        self.len = self.len + p.len() - before;
        Some(at)
    }

    /// The key `waiter` of `platform` was aimed at, if its time has come by
    /// `now` (and not passed by more than [`GRACE`]); the aim is used up. An
    /// aim still to come stays.
    pub(super) fn take(
        &mut self,
        now: Timestamp,
        platform: &str,
        waiter: &Waiter,
    ) -> Option<String> {
        self.with(now, platform, |p| {
            let at = p.by_waiter.get(waiter).copied()?;
            if at.0 > now {
                return None;
            }
            p.remove(at).map(|aim| aim.key)
        })
        .flatten()
    }

    /// Forgets the aim of `waiter` of `platform` (it has a key now).
    pub(super) fn forget(&mut self, now: Timestamp, platform: &str, waiter: &Waiter) {
        self.with(now, platform, |p| {
            if let Some(at) = p.by_waiter.get(waiter).copied() {
                p.remove(at);
            }
        });
    }

    /// Forgets every aim past its grace by `now`, and the platforms left
    /// without aims.
    pub(super) fn forget_due(&mut self, now: Timestamp) {
        let mut len = 0;
        self.platforms.retain(|_, p| {
            p.advance(now);
            len += p.len();
            p.len() > 0
        });
        self.len = len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "github_rest";

    fn t(secs: u64) -> Timestamp {
        Timestamp::from_secs(1_000 + secs)
    }

    fn waiter(n: u64) -> Option<Waiter> {
        Some((Id::from(n), None))
    }

    const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];

    /// Key `i` refreshes at `secs[i]` (given earliest first).
    fn limited(secs: &[u64]) -> Vec<(Timestamp, &'static str)> {
        secs.iter()
            .enumerate()
            .map(|(i, &s)| (t(s), KEYS[i]))
            .collect()
    }

    fn aim(s: &mut Stagger, now: u64, w: Option<Waiter>, keys: &[(Timestamp, &str)]) -> u64 {
        s.aim(t(now), P, w, keys.len(), keys.iter().copied())
            .map_or(0, |a| a.as_secs() - 1_000)
    }

    #[test]
    fn one_waiter_is_aimed_at_the_earliest_refresh() {
        let mut s = Stagger::default();
        assert_eq!(aim(&mut s, 0, waiter(1), &limited(&[10, 20, 30])), 10);
    }

    #[test]
    fn a_crowd_is_spread_evenly_over_the_keys_earliest_first() {
        let keys = limited(&[10, 20, 30]);
        let mut s = Stagger::default();
        let aims: Vec<u64> = (0..9).map(|w| aim(&mut s, 0, waiter(w), &keys)).collect();
        assert_eq!(aims, [10, 20, 30, 10, 20, 30, 10, 20, 30]);
        // Two waiters and three keys: the first two keys, one each.
        let mut s = Stagger::default();
        let aims: Vec<u64> = (0..2).map(|w| aim(&mut s, 0, waiter(w), &keys)).collect();
        assert_eq!(aims, [10, 20]);
    }

    #[test]
    fn keys_refreshing_at_the_same_time_take_a_share_each() {
        let keys = limited(&[10, 10, 30]);
        let mut s = Stagger::default();
        let aims: Vec<u64> = (0..3).map(|w| aim(&mut s, 0, waiter(w), &keys)).collect();
        assert_eq!(aims, [10, 10, 30]);
    }

    #[test]
    fn asking_again_replaces_the_earlier_aim() {
        let keys = limited(&[10, 20]);
        let mut s = Stagger::default();
        for _ in 0..5 {
            assert_eq!(aim(&mut s, 0, waiter(7), &keys), 10);
        }
        assert_eq!(s.len(), 1);
        // Anonymous waiters count once each.
        assert_eq!(aim(&mut s, 0, None, &keys), 20);
        assert_eq!(aim(&mut s, 0, None, &keys), 10);
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn a_waiter_that_asks_again_at_its_time_finds_its_key() {
        let keys = limited(&[10, 20]);
        let mut s = Stagger::default();
        aim(&mut s, 0, waiter(1), &keys);
        aim(&mut s, 0, waiter(2), &keys);
        let two = (Id::from(2u64), None);
        // Too early: the aim stays.
        assert_eq!(s.take(t(19), P, &two), None);
        assert_eq!(s.take(t(20), P, &two).as_deref(), Some("k1"));
        // Used up.
        assert_eq!(s.take(t(20), P, &two), None);
        // Past its grace, an aim is forgotten.
        let one = (Id::from(1u64), None);
        assert_eq!(s.take(t(10).saturating_add(GRACE), P, &one), None);
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn aims_whose_time_has_come_no_longer_count_as_waiting() {
        let mut s = Stagger::default();
        let keys = limited(&[10, 20, 30]);
        for w in 0..3 {
            aim(&mut s, 0, waiter(w), &keys);
        }
        // At 10 s the first key is back, and limited again until 70 s: two
        // aims to come, three keys limited: one each, so the first key's.
        let later = [(t(20), "k1"), (t(30), "k2"), (t(70), "k0")];
        assert_eq!(aim(&mut s, 10, waiter(9), &later), 70);
        s.forget_due(t(100));
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn no_refresh_to_come_means_no_aim() {
        let mut s = Stagger::default();
        assert_eq!(aim(&mut s, 50, waiter(1), &limited(&[10])), 0);
        assert_eq!(aim(&mut s, 50, waiter(1), &[]), 0);
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn forgetting_a_waiter_frees_its_place() {
        let keys = limited(&[10, 20]);
        let mut s = Stagger::default();
        aim(&mut s, 0, waiter(1), &keys);
        s.forget(t(0), P, &(Id::from(1u64), None));
        assert_eq!(s.len(), 0);
        assert_eq!(aim(&mut s, 0, waiter(2), &keys), 10);
    }
}
