//! The engine's state as saved records: the pool's keys and the quota views,
//! named accounts and outstanding leases, written where they changed
//! ([`StateGeneration`], [`Engine::changed_since`]) and restored after a
//! restart or a takeover ([`Engine::restore_state`]).

use super::Engine;
use crate::pool::{ChangedRecords, DecodedState, StateRecords};
use crate::quota::Quotas;
use rand_core::Rng;

/// How far the engine's saved state has changed: the generations of the
/// pool's change log and of the quotas'. Take it when records are encoded,
/// and pass it to [`Engine::changed_since`] to learn what changed since.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateGeneration {
    /// The pool's change generation.
    pub pool: u64,
    /// The quotas' change generation.
    pub quotas: u64,
}

impl StateGeneration {
    /// How many changes it counts (both logs only grow, so a later
    /// generation of the same engine never counts fewer).
    pub fn changes(&self) -> u64 {
        self.pool.saturating_add(self.quotas)
    }
}

impl<R: Rng> Engine<R> {
    /// The generation of the state now.
    pub fn state_generation(&self) -> StateGeneration {
        StateGeneration {
            pool: self.pool.change_generation(),
            quotas: self.quota.change_generation(),
        }
    }

    /// The records that changed after `since`: the shards whose keys or
    /// quota entries changed, and the meta record if the platforms did.
    pub fn changed_since(&self, since: StateGeneration) -> ChangedRecords {
        self.pool
            .changed_since_with(since.pool, &self.quota, since.quotas)
    }

    /// The records `changed` names, keys and quota entries, in the current
    /// format.
    pub fn encode_records(&self, changed: &ChangedRecords) -> StateRecords {
        self.pool.encode_records_with(&self.quota, changed)
    }

    /// Every record of the state, in the current format (to replace what is
    /// stored).
    pub fn encode_all_records(&self) -> StateRecords {
        self.pool.encode_all_records_with(&self.quota)
    }

    /// Replaces the pool and the quotas with saved ones (see
    /// [`restore`](Self::restore) and [`restore_quotas`](Self::restore_quotas)):
    /// outstanding leases go on until they are reported done or reach their
    /// deadline, so that no account is overdrawn after a restart.
    pub fn restore_state(&mut self, decoded: &DecodedState) {
        self.restore(&decoded.snapshot);
        self.restore_quotas(Quotas::from_snapshot(&decoded.quotas));
    }
}
