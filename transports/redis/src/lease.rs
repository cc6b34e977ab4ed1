//! [`RedisLease`]: a lease in one Redis key that expires with it.

use crate::RedisBus;
use crate::bus::BusShared;
use async_trait::async_trait;
use keyman_transport::{BusError, Lease};
use std::sync::Arc;
use std::time::Duration;

impl RedisBus {
    /// A [`Lease`] in the Redis key `key` (in the database of the URL), over
    /// this bus's connection. It uses the server's own key expiry, so the
    /// clocks of the orchestrators need not agree.
    pub fn lease(&self, key: impl Into<String>) -> RedisLease {
        RedisLease {
            shared: self.shared.clone(),
            key: key.into(),
        }
    }
}

/// Takes the lease in `KEYS[1]` for holder `ARGV[1]` for `ARGV[2]` milliseconds,
/// or renews it if that holder has it: 1 if the holder has it now, else 0.
const ACQUIRE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
elseif redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
else
  return 0
end
";

/// Deletes the lease in `KEYS[1]` if holder `ARGV[1]` has it.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
else
  return 0
end
";

/// A [`Lease`] in one Redis key that holds the holder's name and expires
/// with the lease (`SET NX PX`, renewed with `PEXPIRE`, both inside a Lua
/// script so that checking and writing are one step). Made by
/// [`RedisBus::lease`].
#[derive(Clone)]
pub struct RedisLease {
    shared: Arc<BusShared>,
    key: String,
}

impl RedisLease {
    /// The Redis key that holds the lease.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl std::fmt::Debug for RedisLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLease")
            .field("server", &self.shared.server)
            .field("key", &self.key)
            .finish()
    }
}

#[async_trait]
impl Lease for RedisLease {
    async fn try_acquire(&self, holder: &str, ttl: Duration) -> Result<bool, BusError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(ACQUIRE_SCRIPT)
            .arg(1)
            .arg(&self.key)
            .arg(holder)
            .arg(ttl_ms);
        let held: i64 = self.shared.command(cmd).await?;
        Ok(held == 1)
    }

    async fn release(&self, holder: &str) -> Result<(), BusError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RELEASE_SCRIPT).arg(1).arg(&self.key).arg(holder);
        self.shared.command::<i64>(cmd).await.map(drop)
    }

    fn describe(&self) -> String {
        format!("redis key {} on {}", self.key, self.shared.server)
    }
}
