//! [`Lease`]: which of several orchestrators serves, so that a standby can take
//! over when the serving one dies.

use crate::BusError;
use async_trait::async_trait;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// A lease that at most one holder has at a time, for a limited time: the
/// orchestrator that holds it serves, the others stand by and take it once it
/// is free or has expired.
///
/// A holder keeps the lease by calling [`try_acquire`](Lease::try_acquire)
/// again before `ttl` has passed. Implemented in memory ([`MemoryLease`]) and by
/// the brokers (a Redis key with a time to live, a NATS JetStream key-value
/// entry).
#[async_trait]
pub trait Lease: Send + Sync + 'static {
    /// Takes the lease for `holder` for `ttl` if it is free or expired, or
    /// renews it for another `ttl` if `holder` has it already. Returns whether
    /// `holder` holds it now; `false` means another holder has it.
    async fn try_acquire(&self, holder: &str, ttl: Duration) -> Result<bool, BusError>;

    /// Frees the lease if `holder` has it, so that another holder can take it
    /// at once; does nothing if someone else has it.
    async fn release(&self, holder: &str) -> Result<(), BusError>;

    /// What the lease is and where it is kept, for logs (no credentials).
    fn describe(&self) -> String;
}

/// A [`Lease`] in memory, shared by its clones: for tests and for several
/// orchestrators inside one process. Time is tokio's clock, so tests that
/// pause time control expiry.
#[derive(Debug, Clone)]
pub struct MemoryLease {
    name: String,
    /// The holder and when its lease expires; `None` while free.
    held: Arc<Mutex<Option<(String, Instant)>>>,
}

impl MemoryLease {
    /// A free lease called `name` (for logs).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            held: Arc::new(Mutex::new(None)),
        }
    }

    /// Who holds the lease now (an expired lease is held by nobody).
    pub fn holder(&self) -> Option<String> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.as_ref()
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(holder, _)| holder.clone())
    }
}

#[async_trait]
impl Lease for MemoryLease {
    async fn try_acquire(&self, holder: &str, ttl: Duration) -> Result<bool, BusError> {
        let now = Instant::now();
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let free = match held.as_ref() {
            None => true,
            Some((current, expires)) => current == holder || *expires <= now,
        };
        if free {
            *held = Some((holder.to_owned(), now + ttl));
        }
        Ok(free)
    }

    async fn release(&self, holder: &str) -> Result<(), BusError> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.as_ref().is_some_and(|(current, _)| current == holder) {
            *held = None;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("memory lease {}", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(3);

    #[tokio::test(start_paused = true)]
    async fn of_two_holders_only_one_wins() {
        let a = MemoryLease::new("leader");
        let b = a.clone();
        assert!(a.try_acquire("one", TTL).await.unwrap());
        assert!(!b.try_acquire("two", TTL).await.unwrap());
        assert_eq!(b.holder().as_deref(), Some("one"));
        assert_eq!(a.describe(), "memory lease leader");
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_lease_can_be_taken_by_another_holder() {
        let lease = MemoryLease::new("leader");
        assert!(lease.try_acquire("one", TTL).await.unwrap());
        tokio::time::advance(TTL - Duration::from_millis(1)).await;
        assert!(!lease.try_acquire("two", TTL).await.unwrap());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(lease.holder(), None);
        assert!(lease.try_acquire("two", TTL).await.unwrap());
        assert!(!lease.try_acquire("one", TTL).await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn release_frees_the_lease_only_for_its_holder() {
        let lease = MemoryLease::new("leader");
        assert!(lease.try_acquire("one", TTL).await.unwrap());
        lease.release("two").await.unwrap();
        assert_eq!(lease.holder().as_deref(), Some("one"));
        lease.release("one").await.unwrap();
        assert_eq!(lease.holder(), None);
        assert!(lease.try_acquire("two", TTL).await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn renewing_keeps_the_lease_past_its_first_ttl() {
        let lease = MemoryLease::new("leader");
        assert!(lease.try_acquire("one", TTL).await.unwrap());
        for _ in 0..5 {
            tokio::time::advance(TTL / 3).await;
            assert!(lease.try_acquire("one", TTL).await.unwrap());
            assert!(!lease.try_acquire("two", TTL).await.unwrap());
        }
        assert_eq!(lease.holder().as_deref(), Some("one"));
    }
}
