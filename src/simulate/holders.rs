//! The workers holding one key and the arithmetic of their calls in time order,
//! which lets the simulation serve uneventful calls in batches.

use std::collections::VecDeque;

/// The workers holding one key, in the order of their next calls, each with the
/// time of its next call. All next calls lie within one call interval of each
/// other, so the calls of all holders, in time order, are those of the holders
/// in this order, round after round.
#[derive(Debug, Default, Clone)]
pub(super) struct Holders {
    /// `(next call, worker)`, sorted by next call.
    pub(super) queue: VecDeque<(u64, usize)>,
}

impl Holders {
    pub(super) fn len(&self) -> u64 {
        self.queue.len() as u64
    }

    pub(super) fn first_call(&self) -> Option<u64> {
        self.queue.front().map(|&(at, _)| at)
    }

    /// How many calls the holders make before `limit`. `O(log h)`: of the rounds
    /// of calls that start before `limit`, all but the last are complete, since
    /// the holders' next calls lie within one interval of the first.
    pub(super) fn calls_before(&self, limit: u64, interval: u64) -> u64 {
        let Some(first) = self.first_call().filter(|&at| at < limit) else {
            return 0;
        };
        let rounds = (limit - 1 - first) / interval + 1;
        let last_round_limit = limit - (rounds - 1) * interval;
        let in_last_round = self.queue.partition_point(|&(at, _)| at < last_round_limit) as u64;
        self.len() * (rounds - 1) + in_last_round
    }

    /// The time of call number `n` (from 0) of all holders, in time order.
    pub(super) fn call_time(&self, n: u64, interval: u64) -> u64 {
        let h = self.len();
        let (round, idx) = (n / h, n % h);
        self.queue[idx as usize].0 + round * interval
    }

    /// Moves past the next `n` calls in time order.
    pub(super) fn advance(&mut self, n: u64, interval: u64) {
        let h = self.len();
        let (rounds, rest) = (n / h, (n % h) as usize);
        for (i, (at, _)) in self.queue.iter_mut().enumerate() {
            *at += rounds * interval;
            if i < rest {
                *at += interval;
            }
        }
        self.queue.rotate_left(rest);
    }

    /// Adds `worker` making its first call at `at`, which is no later than any
    /// other holder's next call.
    pub(super) fn join(&mut self, at: u64, worker: usize) {
        let pos = self.queue.partition_point(|&(t, _)| t <= at);
        self.queue.insert(pos, (at, worker));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use crate::simulate::run::below;

    /// Every call of the holders in time order, by brute force.
    fn all_calls(holders: &Holders, interval: u64, limit: u64) -> Vec<(u64, usize)> {
        let mut calls = Vec::new();
        for &(at, w) in &holders.queue {
            let mut t = at;
            while t < limit {
                calls.push((t, w));
                t += interval;
            }
        }
        calls.sort_by_key(|&(t, _)| t);
        calls
    }

    fn holders(rng: &mut SplitMix64, interval: u64) -> Holders {
        let mut h = Holders::default();
        let base = 10_000 + below(rng, 5000);
        for w in 0..1 + below(rng, 12) as usize {
            let at = base + below(rng, interval + 1);
            h.queue.push_back((at, w));
        }
        h.queue.make_contiguous().sort();
        h
    }

    #[test]
    fn batched_call_arithmetic_matches_counting_calls_one_by_one() {
        let mut rng = SplitMix64::new(3);
        for _ in 0..500 {
            let interval = 1 + below(&mut rng, 2000);
            let mut h = holders(&mut rng, interval);
            let limit = 10_000 + below(&mut rng, 40_000);
            let calls = all_calls(&h, interval, limit);
            assert_eq!(h.calls_before(limit, interval), calls.len() as u64);
            for (n, &(t, _)) in calls.iter().enumerate() {
                assert_eq!(h.call_time(n as u64, interval), t);
            }
            // Advancing past n calls leaves exactly the later calls.
            let n = below(&mut rng, calls.len() as u64 + 1);
            let mut later: Vec<u64> = all_calls(&h, interval, limit + 100 * interval)
                .into_iter()
                .skip(n as usize)
                .map(|(t, _)| t)
                .collect();
            h.advance(n, interval);
            let mut after: Vec<u64> = all_calls(&h, interval, limit + 100 * interval)
                .into_iter()
                .map(|(t, _)| t)
                .collect();
            later.sort();
            after.sort();
            assert_eq!(after, later);
            assert!(
                h.queue
                    .iter()
                    .zip(h.queue.iter().skip(1))
                    .all(|(a, b)| a.0 <= b.0)
            );
        }
    }
}
