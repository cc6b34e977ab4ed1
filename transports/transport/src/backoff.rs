//! How long a transport waits between attempts to reconnect.

use std::time::Duration;

/// Capped exponential backoff: the first retry waits `initial`, each further one
/// twice as long as the one before, never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait before the first retry.
    pub initial: Duration,
    /// The longest wait between two retries.
    pub max: Duration,
}

impl Default for Backoff {
    /// 50 ms, doubling up to 1 s.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// The wait before retry number `attempt`, counted from 1 (0 is treated as 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.initial
            .saturating_mul(1u32 << doublings)
            .min(self.max.max(self.initial))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let backoff = Backoff::default();
        let delays: Vec<u64> = (0..8)
            .map(|attempt| backoff.delay(attempt).as_millis() as u64)
            .collect();
        assert_eq!(delays, [50, 50, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(1));
    }
}
