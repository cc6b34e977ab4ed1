//! The pool's state as plain data, to store and restore it.

use super::{KeyPool, Selection};
use crate::time::Timestamp;

/// The state of a [`KeyPool`] as plain data, to store and restore it (the
/// orchestrator keeps it across restarts). It contains the keys: store it where
/// the keys themselves may be kept.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct PoolSnapshot {
    /// The platforms, in the order they were first published.
    pub platforms: Vec<PlatformSnapshot>,
}

/// One platform of a [`PoolSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct PlatformSnapshot {
    /// The platform's name.
    pub name: String,
    /// Its fresh keys.
    #[serde(default)]
    pub fresh: Vec<String>,
    /// Its expired keys with their refresh times.
    #[serde(default)]
    pub expired: Vec<(String, Timestamp)>,
    /// Its invalid keys.
    #[serde(default)]
    pub invalid: Vec<String>,
}

impl KeyPool {
    /// The pool's state as plain data. `O(n)` over all platforms.
    pub fn snapshot(&self) -> PoolSnapshot {
        PoolSnapshot {
            platforms: self
                .platforms
                .iter()
                .map(|(name, pool)| PlatformSnapshot {
                    name: name.clone(),
                    fresh: pool.fresh.iter().map(|k| k.to_string()).collect(),
                    expired: pool
                        .expired
                        .iter()
                        .map(|(t, k)| (k.to_string(), *t))
                        .collect(),
                    invalid: pool.invalid.iter().map(|k| k.to_string()).collect(),
                })
                .collect(),
        }
    }

    /// A pool in the state `snapshot` describes. A key listed twice in one
    /// platform keeps the last state it is listed with (invalid over expired over
    /// fresh); empty names are skipped. `O(n log n)`.
    pub fn from_snapshot(snapshot: &PoolSnapshot, selection: Selection) -> KeyPool {
        let mut pool = KeyPool::with_selection(selection);
        for p in &snapshot.platforms {
            if p.name.is_empty() {
                continue;
            }
            pool.ensure_platform(&p.name);
            for k in p.fresh.iter().filter(|k| !k.is_empty()) {
                pool.publish(&p.name, k);
            }
            for (k, until) in p.expired.iter().filter(|(k, _)| !k.is_empty()) {
                pool.publish(&p.name, k);
                // Expire as of the epoch, so that refresh times already past are
                // kept and refreshed on the next touch like any other.
                pool.expire(&p.name, k, *until, Timestamp::EPOCH);
            }
            for k in p.invalid.iter().filter(|k| !k.is_empty()) {
                pool.publish(&p.name, k);
                pool.invalidate(&p.name, k, Timestamp::EPOCH);
            }
        }
        pool
    }
}
