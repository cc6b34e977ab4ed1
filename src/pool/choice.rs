//! How [`KeyPool`] chooses a fresh key: [`KeyPool::assign`] with the pool's
//! [`Selection`], [`KeyPool::choose`] with a strategy and a weight per key.

use super::platform::PlatformPool;
use super::{Assignment, KeyPool, Pick, Selection, Weight};
use crate::time::Timestamp;
use rand_core::Rng;

impl KeyPool {
    /// Hands out a fresh key of `platform` chosen by the pool's [`Selection`],
    /// after refreshing the platform's due keys. The key stays fresh (keys are
    /// shared, as in Augur). `O(1)` plus the refresh of due keys.
    pub fn assign<R: Rng + ?Sized>(
        &mut self,
        platform: &str,
        now: Timestamp,
        rng: &mut R,
    ) -> Assignment<'_> {
        let pick = self.pick(platform, now, rng);
        self.picked(platform, pick)
    }

    /// The answer that `pick` (of [`pick`](Self::pick) or
    /// [`pick_weighted`](Self::pick_weighted)) stands for, with nothing
    /// changed since.
    pub(crate) fn picked(&self, platform: &str, pick: Pick) -> Assignment<'_> {
        match pick {
            Pick::Key(idx) => match self.platform(platform).and_then(|p| p.fresh.get(idx)) {
                Some(key) => Assignment::Key(key),
                None => Assignment::NoKeys,
            },
            Pick::Wait(refresh_at) => Assignment::Wait { refresh_at },
            Pick::UnknownPlatform => Assignment::UnknownPlatform,
            Pick::NoKeys => Assignment::NoKeys,
        }
    }

    /// [`assign`](Self::assign), answering with the key's place.
    /// The pool of `platform` with its due keys refreshed at `now`, if it has
    /// a fresh key; else the answer to a choice: an unknown platform, or a
    /// wait until its next refresh (no keys if none is due).
    fn with_fresh(&mut self, platform: &str, now: Timestamp) -> Result<&mut PlatformPool, Pick> {
        let Some(pool) = self.platform_mut(platform) else {
            return Err(Pick::UnknownPlatform);
        };
        pool.refresh(now);
        if pool.fresh.is_empty() {
            return Err(wait_until(pool.earliest_refresh()));
        }
        Ok(pool)
    }

    pub(crate) fn pick<R: Rng + ?Sized>(
        &mut self,
        platform: &str,
        now: Timestamp,
        rng: &mut R,
    ) -> Pick {
        let selection = self.selection;
        let pool = match self.with_fresh(platform, now) {
            Ok(pool) => pool,
            Err(answer) => return answer,
        };
        let len = pool.fresh.len();
        let idx = match selection {
            Selection::Uniform | Selection::MostRemaining | Selection::WeightedRemaining => {
                uniform_index(rng.next_u64(), len)
            }
            Selection::RoundRobin => {
                let i = pool.cursor % len;
                pool.cursor = i + 1;
                i
            }
            Selection::LeastAssigned => least_assigned(&pool.handouts, rng, |_| true),
        };
        pool.handouts[idx] = pool.handouts[idx].saturating_add(1);
        Pick::Key(idx)
    }

    /// Like [`assign`](Self::assign), with `selection` and what `weight` says of
    /// each fresh key's quota: keys of weight `Calls(0)` are passed over. When
    /// every fresh key may be chosen, [`Selection::Uniform`] draws exactly as
    /// `assign` does (the same key for the same generator). When fresh keys
    /// exist but none may be chosen, the answer is `Wait` until the earlier of
    /// the platform's next refresh and `fallback` (`NoKeys` if neither is known).
    /// `O(n)`.
    pub fn choose<R: Rng + ?Sized>(
        &mut self,
        platform: &str,
        now: Timestamp,
        rng: &mut R,
        selection: Selection,
        fallback: Option<Timestamp>,
        weight: impl FnMut(&str) -> Weight,
    ) -> Assignment<'_> {
        let pick = self.pick_weighted(platform, now, rng, selection, fallback, None, weight);
        self.picked(platform, pick)
    }

    /// [`choose`](Self::choose), answering with the key's place; with
    /// `max_handouts`, a key handed out that many times since it became fresh
    /// is passed over too.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn pick_weighted<R: Rng + ?Sized>(
        &mut self,
        platform: &str,
        now: Timestamp,
        rng: &mut R,
        selection: Selection,
        fallback: Option<Timestamp>,
        max_handouts: Option<u32>,
        mut weight: impl FnMut(&str) -> Weight,
    ) -> Pick {
        let pool = match self.with_fresh(platform, now) {
            Ok(pool) => pool,
            Err(answer) => return answer,
        };
        let len = pool.fresh.len();
        let weights: Vec<Weight> = pool
            .fresh
            .iter()
            .zip(&pool.handouts)
            .map(|(k, &n)| match max_handouts {
                Some(max) if n >= max => Weight::Calls(0),
                _ => weight(k),
            })
            .collect();
        let eligible = |w: &Weight| !matches!(w, Weight::Calls(0));
        let count = weights.iter().filter(|w| eligible(w)).count();
        if count == 0 {
            let at = match (pool.earliest_refresh(), fallback) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            return wait_until(at);
        }
        let nth_eligible = |n: usize| {
            weights
                .iter()
                .enumerate()
                .filter(|(_, w)| eligible(w))
                .nth(n)
                .map_or(0, |(i, _)| i)
        };
        let known: Vec<u64> = weights
            .iter()
            .filter_map(|w| match w {
                Weight::Calls(c) if *c > 0 => Some(*c),
                _ => None,
            })
            .collect();
        let idx = match selection {
            Selection::RoundRobin => {
                let start = pool.cursor % len;
                let i = (0..len)
                    .map(|d| (start + d) % len)
                    .find(|&i| eligible(&weights[i]))
                    .unwrap_or(start);
                pool.cursor = i + 1;
                i
            }
            Selection::MostRemaining if !known.is_empty() => {
                let rank = |w: &Weight| match w {
                    Weight::Unknown => u64::MAX,
                    Weight::Calls(c) => *c,
                };
                let best = weights.iter().map(rank).max().unwrap_or(0);
                let tied: Vec<usize> = (0..len).filter(|&i| rank(&weights[i]) == best).collect();
                match tied.len() {
                    1 => tied[0],
                    n => tied[uniform_index(rng.next_u64(), n)],
                }
            }
            Selection::WeightedRemaining if !known.is_empty() => {
                // Bounded, so that the sums below cannot overflow.
                let cap = |c: u64| u128::from(c.min(1 << 40));
                let mean = known.iter().map(|&c| cap(c)).sum::<u128>() / known.len() as u128;
                let w = |w: &Weight| match w {
                    Weight::Unknown => mean.max(1),
                    Weight::Calls(c) => cap(*c),
                };
                let total: u128 = weights.iter().map(w).sum();
                let mut r = (u128::from(rng.next_u64()) * total) >> 64;
                let mut pick = 0;
                for (i, x) in weights.iter().enumerate() {
                    let x = w(x);
                    if r < x {
                        pick = i;
                        break;
                    }
                    r -= x;
                }
                pick
            }
            Selection::LeastAssigned => {
                least_assigned(&pool.handouts, rng, |i| eligible(&weights[i]))
            }
            // Uniform, or a quota strategy with nothing known.
            _ if count == len => uniform_index(rng.next_u64(), len),
            _ => nth_eligible(uniform_index(rng.next_u64(), count)),
        };
        pool.handouts[idx] = pool.handouts[idx].saturating_add(1);
        Pick::Key(idx)
    }
}

/// The index with the fewest handouts among those `eligible` allows (at least
/// one must), ties uniformly at random.
/// A wait until `at`, or no keys when nothing is due.
fn wait_until(at: Option<Timestamp>) -> Pick {
    match at {
        Some(refresh_at) => Pick::Wait(refresh_at),
        None => Pick::NoKeys,
    }
}

fn least_assigned<R: Rng + ?Sized>(
    handouts: &[u32],
    rng: &mut R,
    eligible: impl Fn(usize) -> bool,
) -> usize {
    let fewest = (0..handouts.len())
        .filter(|&i| eligible(i))
        .map(|i| handouts[i])
        .min()
        .unwrap_or(0);
    let tied: Vec<usize> = (0..handouts.len())
        .filter(|&i| eligible(i) && handouts[i] == fewest)
        .collect();
    match tied.len() {
        0 => 0,
        1 => tied[0],
        n => tied[uniform_index(rng.next_u64(), n)],
    }
}

/// Maps a uniform 64-bit word to `0..len` by multiply-shift (bias below `len / 2^64`).
pub(super) fn uniform_index(word: u64, len: usize) -> usize {
    ((u128::from(word) * len as u128) >> 64) as usize
}
