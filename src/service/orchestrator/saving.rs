//! Keeping the pool's state in a [`StateStore`]: loading it when a term
//! begins, and saving it after changes (debounced by the save interval, once
//! more on the way out) from a task of its own.

use super::super::StateStore;
use super::OrchestratorError;
use crate::engine::Engine;
use crate::pool::PoolSnapshot;
use crate::rng::SplitMix64;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The engine's pool as the JSON a store keeps.
pub(crate) fn snapshot_json(engine: &Engine<SplitMix64>) -> Vec<u8> {
    // A snapshot is strings and numbers: serializing it cannot fail.
    serde_json::to_vec(&engine.pool().snapshot()).unwrap_or_default()
}

/// Loads the saved state from `store` into `engine`. A store that cannot be
/// read stops the orchestrator (starting empty would overwrite the state); a
/// state that cannot be decoded is logged and the engine starts empty.
pub(super) async fn load_state(
    engine: &mut Engine<SplitMix64>,
    store: &dyn StateStore,
) -> Result<(), OrchestratorError> {
    let loaded = store
        .load()
        .await
        .map_err(|error| OrchestratorError::LoadState {
            store: store.describe(),
            error,
        })?;
    match loaded {
        None => tracing::info!(store = %store.describe(), "no saved state; starting empty"),
        Some(bytes) => match serde_json::from_slice::<PoolSnapshot>(&bytes) {
            Ok(snapshot) => {
                engine.restore(&snapshot);
                let keys: usize = snapshot
                    .platforms
                    .iter()
                    .map(|p| p.fresh.len() + p.expired.len() + p.invalid.len())
                    .sum();
                tracing::info!(
                    store = %store.describe(),
                    platforms = snapshot.platforms.len(),
                    keys,
                    "state restored"
                );
            }
            Err(e) => tracing::error!(
                store = %store.describe(),
                error = %e,
                "the saved state is unreadable; starting empty (it will be overwritten)"
            ),
        },
    }
    Ok(())
}

/// A state for the saver: the engine's change counter, and the state's bytes.
type Counted = (u64, Vec<u8>);

/// The saving of one serving term: the engine's change counter as last saved,
/// when the next save is due, and the task that writes to the store.
pub(super) struct Saving {
    /// The saver, when there is a store: it is sent the engine's change
    /// counter with each state.
    saver: Option<(mpsc::Sender<Counted>, JoinHandle<()>)>,
    /// The engine's change counter of the last state that landed in the store.
    landed: Arc<AtomicU64>,
    interval: Duration,
    /// The engine's change counter when its state was last handed to the saver.
    saved_changes: u64,
    /// When the changes made since are saved.
    save_at: Option<Instant>,
}

impl Saving {
    /// Starts saving to `store` (if any) the changes made after `changes`
    /// (the engine's change counter now), each within `interval`.
    pub(super) fn start(
        store: Option<Arc<dyn StateStore>>,
        interval: Duration,
        changes: u64,
    ) -> Self {
        let landed = Arc::new(AtomicU64::new(changes));
        let saver = store.map(|store| {
            let (tx, rx) = mpsc::channel::<Counted>(1);
            (tx, tokio::spawn(save_loop(store, rx, landed.clone())))
        });
        Self {
            saver,
            landed,
            interval,
            saved_changes: changes,
            save_at: None,
        }
    }

    /// When the next save is due, if one is.
    pub(super) fn save_at(&self) -> Option<Instant> {
        self.save_at
    }

    /// The save is due: hands the engine's state to the saver if it changed
    /// and the saver is free (otherwise the next change schedules another).
    pub(super) fn handle_due(&mut self, engine: &Engine<SplitMix64>) {
        self.save_at = None;
        let changes = engine.stats().changes;
        if let Some((tx, _)) = &self.saver
            && changes != self.saved_changes
            && tx.try_send((changes, snapshot_json(engine))).is_ok()
        {
            self.saved_changes = changes;
        }
    }

    /// After the engine handled something: schedules a save if it changed
    /// and none is due yet.
    pub(super) fn schedule(&mut self, engine: &Engine<SplitMix64>) {
        if self.saver.is_some()
            && self.save_at.is_none()
            && engine.stats().changes != self.saved_changes
        {
            self.save_at = Some(Instant::now() + self.interval);
        }
    }

    /// Stops saving at once: nothing more is written (a save already on its
    /// way to the store may still land).
    pub(super) fn abort(self) {
        if let Some((_, saver)) = self.saver {
            saver.abort();
        }
    }

    /// Saves what changed since the last save, and waits until every save is
    /// done, at most `limit`. If they are not done by then, the saver is
    /// stopped (nothing more is written) and the error says how many of the
    /// engine's changes are not in the store.
    pub(super) async fn finish(
        self,
        engine: &Engine<SplitMix64>,
        limit: Duration,
    ) -> Result<(), Unsaved> {
        let Some((tx, mut saver)) = self.saver else {
            return Ok(());
        };
        let changes = engine.stats().changes;
        let done = async {
            if changes != self.saved_changes {
                let _ = tx.send((changes, snapshot_json(engine))).await;
            }
            drop(tx);
            let _ = (&mut saver).await;
        };
        if tokio::time::timeout(limit, done).await.is_err() {
            saver.abort();
        }
        let landed = self.landed.load(Ordering::Acquire);
        if landed == changes {
            Ok(())
        } else {
            Err(Unsaved {
                changes: changes.saturating_sub(landed),
            })
        }
    }
}

/// The final save did not land in time: what is not in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unsaved {
    /// How many changes were made since the last state that landed.
    pub(super) changes: u64,
}

/// Saves the snapshots it is sent, in order; a failed save is tried again (every
/// second, with the newest snapshot) until one succeeds. `landed` is set to
/// the change counter of each state that lands.
async fn save_loop(
    store: Arc<dyn StateStore>,
    mut rx: mpsc::Receiver<Counted>,
    landed: Arc<AtomicU64>,
) {
    while let Some((mut changes, mut state)) = rx.recv().await {
        loop {
            match store.save(&state).await {
                Ok(()) => {
                    landed.store(changes, Ordering::Release);
                    break;
                }
                Err(e) => {
                    tracing::warn!(store = %store.describe(), error = %e, "could not save the state; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    match rx.try_recv() {
                        Ok(newer) => (changes, state) = newer,
                        Err(mpsc::error::TryRecvError::Empty) => {}
                        Err(mpsc::error::TryRecvError::Disconnected) => {}
                    }
                }
            }
        }
    }
}
