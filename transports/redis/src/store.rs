//! [`RedisStore`]: state in one Redis hash, a field per record, written by a
//! Lua script that checks the lease first when the store is fenced.

use crate::bus::BusShared;
use crate::{RedisBus, RedisLease};
use async_trait::async_trait;
use keyman_transport::{BusError, Records, Saved, StateStore, StateWrite};
use std::sync::Arc;

impl RedisBus {
    /// A [`StateStore`] in the Redis hash `key` (a field per record), in the
    /// database of the URL, over this bus's connection. Unfenced; see
    /// [`RedisStore::fenced_by`].
    pub fn state_store(&self, key: impl Into<String>) -> RedisStore {
        RedisStore {
            shared: self.shared.clone(),
            key: key.into(),
            lease_key: None,
        }
    }
}

/// A [`StateStore`] in one Redis hash (`HSET` of the changed fields, in one
/// Lua script that first checks, when fenced, that the lease key names the
/// saving holder). A plain string value in the key (what older keyman
/// versions wrote) loads as the one record `meta`; the first save that
/// replaces everything turns it into a hash. Made by [`RedisBus::state_store`].
#[derive(Clone)]
pub struct RedisStore {
    shared: Arc<BusShared>,
    key: String,
    lease_key: Option<String>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("server", &self.shared.server)
            .field("key", &self.key)
            .finish()
    }
}

impl RedisStore {
    /// This store, fenced by `lease`: a save given a holder lands only while
    /// the lease key holds that holder's name, checked in the same script
    /// that writes.
    pub fn fenced_by(mut self, lease: &RedisLease) -> Self {
        self.lease_key = Some(lease.key().to_owned());
        self
    }
}

/// `KEYS[1]` the state, `KEYS[2]` the lease; `ARGV[1]` the holder ('' for an
/// unfenced save), `ARGV[2]` '1' to replace everything, then field, value
/// pairs. 1: written; 0: fenced; -1: the key holds something that is not a
/// hash and this save does not replace it.
const SAVE_SCRIPT: &str = r"
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
local t = redis.call('TYPE', KEYS[1]).ok
if ARGV[2] == '1' then
  redis.call('DEL', KEYS[1])
elseif t ~= 'hash' and t ~= 'none' then
  return -1
end
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
";

/// Copies `KEYS[1]` to `KEYS[2]` whatever its type; 1 if there was something.
const SET_ASIDE_SCRIPT: &str = r"
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'none' then
  return 0
elseif t == 'string' then
  redis.call('SET', KEYS[2], redis.call('GET', KEYS[1]))
elseif t == 'hash' then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    redis.call('HSET', KEYS[2], all[i], all[i + 1])
  end
else
  redis.call('COPY', KEYS[1], KEYS[2])
end
return 1
";

#[async_trait]
impl StateStore for RedisStore {
    async fn load(&self, fence: Option<&str>) -> Result<Option<Records>, BusError> {
        if let (Some(lease), Some(holder)) = (&self.lease_key, fence) {
            let mut cmd = redis::cmd("GET");
            cmd.arg(lease);
            let current: Option<String> = self.shared.command(cmd).await?;
            if current.as_deref() != Some(holder) {
                return Err(BusError::Broker(
                    "the lease is no longer held by this orchestrator".into(),
                ));
            }
        }
        let mut cmd = redis::cmd("TYPE");
        cmd.arg(&self.key);
        let kind: String = self.shared.command(cmd).await?;
        match kind.as_str() {
            "none" => Ok(None),
            "string" => {
                let mut cmd = redis::cmd("GET");
                cmd.arg(&self.key);
                let value: Option<Vec<u8>> = self.shared.command(cmd).await?;
                Ok(value.map(|v| Records::from([("meta".to_owned(), v)])))
            }
            "hash" => {
                let mut cmd = redis::cmd("HGETALL");
                cmd.arg(&self.key);
                let fields: Vec<(String, Vec<u8>)> = self.shared.command(cmd).await?;
                Ok(Some(fields.into_iter().collect()))
            }
            other => Ok(Some(Records::from([(
                "meta".to_owned(),
                format!("a Redis {other}").into_bytes(),
            )]))),
        }
    }

    async fn save(&self, write: &StateWrite, fence: Option<&str>) -> Result<Saved, BusError> {
        let holder = match (&self.lease_key, fence) {
            (Some(_), Some(holder)) => holder,
            _ => "",
        };
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(SAVE_SCRIPT)
            .arg(2)
            .arg(&self.key)
            .arg(self.lease_key.as_deref().unwrap_or(&self.key))
            .arg(holder)
            .arg(if write.replace { "1" } else { "0" });
        for (name, value) in &write.records {
            cmd.arg(name).arg(value.as_slice());
        }
        match self.shared.command::<i64>(cmd).await? {
            1 => Ok(Saved::Written),
            0 => Ok(Saved::Fenced),
            _ => Err(BusError::Broker(
                format!(
                    "redis key {} holds something that is not keyman's state; not overwritten",
                    self.key
                )
                .into(),
            )),
        }
    }

    async fn set_aside(&self, stamp_ms: u64) -> Result<Option<String>, BusError> {
        let copy = format!("{}:unreadable:{stamp_ms}", self.key);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(SET_ASIDE_SCRIPT).arg(2).arg(&self.key).arg(&copy);
        let copied: i64 = self.shared.command(cmd).await?;
        Ok((copied == 1).then_some(copy))
    }

    fn describe(&self) -> String {
        format!("redis key {} on {}", self.key, self.shared.server)
    }
}
