//! [`RedisStore`]: state in one Redis key.

use crate::RedisBus;
use crate::bus::BusShared;
use async_trait::async_trait;
use keyman_transport::{BusError, StateStore};
use std::sync::Arc;

impl RedisBus {
    /// A [`StateStore`] in the Redis key `key`, in the database of the URL,
    /// over this bus's connection.
    pub fn state_store(&self, key: impl Into<String>) -> RedisStore {
        RedisStore {
            shared: self.shared.clone(),
            key: key.into(),
        }
    }
}

/// A [`StateStore`] in one Redis key (`GET` / `SET`), in the database the URL
/// names. Made by [`RedisBus::state_store`].
#[derive(Clone)]
pub struct RedisStore {
    shared: Arc<BusShared>,
    key: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("server", &self.shared.server)
            .field("key", &self.key)
            .finish()
    }
}

#[async_trait]
impl StateStore for RedisStore {
    async fn load(&self) -> Result<Option<Vec<u8>>, BusError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(&self.key);
        self.shared.command::<Option<Vec<u8>>>(cmd).await
    }

    async fn save(&self, state: &[u8]) -> Result<(), BusError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(&self.key).arg(state);
        self.shared.command::<()>(cmd).await
    }

    fn describe(&self) -> String {
        format!("redis key {} on {}", self.key, self.shared.server)
    }
}
