//! Keeping the pool's state in a [`StateStore`]: loading it when a term
//! begins (refusing records it cannot read, after copying them aside), and
//! saving the records that changed (debounced by the save interval, once more
//! on the way out, fenced by the lease when there is one) from a task of its own.

use super::super::{Saved, StateStore, StateWrite};
use super::OrchestratorError;
use crate::engine::{Engine, StateGeneration};
use crate::pool::{DecodedState, STATE_FORMAT_VERSION, decode_records};
use crate::rng::SplitMix64;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The wall clock in milliseconds, for the names of copies set aside.
fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What loading found, for the saving that follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Loaded {
    /// The first save must write everything and replace what is stored (the
    /// records were of an older format, or unreadable and discarded).
    pub(super) replace: bool,
}

/// Loads the saved state from `store` into `engine` (`fence`: the lease
/// holder, for a fenced store). A store that cannot be read stops the
/// orchestrator (starting empty would overwrite the state). Records that
/// cannot be decoded, or of a newer format, are copied aside first; then the
/// orchestrator refuses to start ([`OrchestratorError::UnreadableState`])
/// unless `discard`, when it starts empty.
pub(super) async fn load_state(
    engine: &mut Engine<SplitMix64>,
    store: &dyn StateStore,
    fence: Option<&str>,
    discard: bool,
) -> Result<Loaded, OrchestratorError> {
    let load_error = |error| OrchestratorError::LoadState {
        store: store.describe(),
        error,
    };
    let Some(records) = store.load(fence).await.map_err(load_error)? else {
        tracing::info!(store = %store.describe(), "no saved state; starting empty");
        engine.restore_state(&empty_state());
        return Ok(Loaded { replace: false });
    };
    match decode_records(&records) {
        Ok(decoded) => {
            engine.restore_state(&decoded);
            let keys: usize = decoded
                .snapshot
                .platforms
                .iter()
                .map(|p| p.fresh.len() + p.expired.len() + p.invalid.len())
                .sum();
            let migrate = decoded.version < STATE_FORMAT_VERSION;
            tracing::info!(
                store = %store.describe(),
                platforms = decoded.snapshot.platforms.len(),
                keys,
                accounts = decoded.quotas.accounts.len(),
                leases = decoded.quotas.leases.len(),
                records = records.len(),
                format_version = decoded.version,
                "state restored{}",
                if migrate { "; it is saved in the current format next" } else { "" }
            );
            Ok(Loaded { replace: migrate })
        }
        Err(reason) => {
            let copy = store
                .set_aside(wall_clock_ms())
                .await
                .map_err(load_error)?
                .unwrap_or_else(|| "(nothing left to copy)".to_owned());
            if discard {
                tracing::warn!(
                    store = %store.describe(),
                    %reason,
                    copy = %copy,
                    "the saved state is unreadable; discarding it as asked and starting empty (a copy is kept at {copy})"
                );
                engine.restore_state(&empty_state());
                Ok(Loaded { replace: true })
            } else {
                Err(OrchestratorError::UnreadableState {
                    store: store.describe(),
                    reason: reason.to_string(),
                    copy,
                })
            }
        }
    }
}

/// Nothing saved: no key, no quota view.
fn empty_state() -> DecodedState {
    DecodedState {
        snapshot: Default::default(),
        quotas: Default::default(),
        version: STATE_FORMAT_VERSION,
    }
}

/// One save on its way to the saver.
struct SaveJob {
    /// The state's generation it saves.
    generation: StateGeneration,
    write: StateWrite,
    /// The lease holder, for a fenced save.
    fence: Option<String>,
    /// Until when the term that made it may write (a process paused past
    /// its lease must not).
    valid_until: Option<Instant>,
}

/// The saving of one serving term: the state's generation as last saved,
/// when the next save is due, and the task that writes to the store.
pub(super) struct Saving {
    /// The saver, when there is a store.
    saver: Option<(mpsc::Sender<SaveJob>, JoinHandle<()>)>,
    /// The changes counted by the state's generation of the last save that
    /// landed in the store ([`StateGeneration::changes`]).
    landed: Arc<AtomicU64>,
    interval: Duration,
    fence: Option<String>,
    /// The state's generation when its records were last handed to the saver.
    saved_generation: StateGeneration,
    /// Whether the next save writes everything (and replaces what is stored).
    replace: bool,
    /// When the changes made since are saved.
    save_at: Option<Instant>,
    /// No save is encoded before this: four times as long as the last encode
    /// took has passed since it.
    not_before: Option<Instant>,
}

impl Saving {
    /// Starts saving to `store` (if any) the changes made to `engine`'s state
    /// (keys and quotas) from now on, each within `interval`; `fence` is the lease holder (with
    /// a lease). After `loaded` asked for it, the first save (at once) writes
    /// everything.
    /// `generation` is the state's generation that the store already
    /// holds (the one right after loading): later changes are saved.
    pub(super) fn start(
        store: Option<Arc<dyn StateStore>>,
        interval: Duration,
        generation: StateGeneration,
        fence: Option<String>,
        loaded: Loaded,
    ) -> Self {
        let landed = Arc::new(AtomicU64::new(generation.changes()));
        let saver = store.map(|store| {
            let (tx, rx) = mpsc::channel::<SaveJob>(1);
            (tx, tokio::spawn(save_loop(store, rx, landed.clone())))
        });
        let replace = loaded.replace && saver.is_some();
        Self {
            saver,
            landed,
            interval,
            fence,
            saved_generation: generation,
            replace,
            save_at: replace.then(Instant::now),
            not_before: None,
        }
    }

    /// When the next save is due, if one is.
    pub(super) fn save_at(&self) -> Option<Instant> {
        self.save_at
    }

    fn job(&self, engine: &Engine<SplitMix64>, valid_until: Option<Instant>) -> Option<SaveJob> {
        let write = if self.replace {
            StateWrite {
                records: engine.encode_all_records(),
                replace: true,
            }
        } else {
            let changed = engine.changed_since(self.saved_generation);
            if changed.is_empty() {
                return None;
            }
            StateWrite {
                records: engine.encode_records(&changed),
                replace: false,
            }
        };
        Some(SaveJob {
            generation: engine.state_generation(),
            write,
            fence: self.fence.clone(),
            valid_until,
        })
    }

    /// The save is due: hands the records that changed to the saver if it
    /// is free (otherwise the next change schedules another). `valid_until`:
    /// until when this term may write (with a lease).
    pub(super) fn handle_due(&mut self, engine: &Engine<SplitMix64>, valid_until: Option<Instant>) {
        self.save_at = None;
        let generation = engine.state_generation();
        let started = Instant::now();
        if let Some((tx, _)) = &self.saver
            && let Ok(permit) = tx.try_reserve()
            && let Some(job) = self.job(engine, valid_until)
        {
            permit.send(job);
            self.saved_generation = generation;
            self.replace = false;
            // Encoding runs in the serve loop: during a burst that changes
            // every record, keep it to at most a fifth of the loop's time.
            self.not_before = Some(Instant::now() + started.elapsed() * 4);
        }
    }

    fn dirty(&self, engine: &Engine<SplitMix64>) -> bool {
        self.replace || engine.state_generation() != self.saved_generation
    }

    /// After the engine handled something: schedules a save if it changed
    /// and none is due yet.
    pub(super) fn schedule(&mut self, engine: &Engine<SplitMix64>) {
        if self.saver.is_some() && self.save_at.is_none() && self.dirty(engine) {
            let at = Instant::now() + self.interval;
            self.save_at = Some(self.not_before.map_or(at, |not_before| at.max(not_before)));
        }
    }

    /// Stops saving at once: nothing more is written (a save already on its
    /// way to the store may still land, unless the store is fenced).
    pub(super) fn abort(self) {
        if let Some((_, saver)) = self.saver {
            saver.abort();
        }
    }

    /// Saves what changed since the last save, and waits until every save is
    /// done, at most `limit`. If they are not done by then, the saver is
    /// stopped (nothing more is written) and the error says how many of the
    /// pool's changes are not in the store.
    pub(super) async fn finish(
        self,
        engine: &Engine<SplitMix64>,
        valid_until: Option<Instant>,
        limit: Duration,
    ) -> Result<(), Unsaved> {
        let job = self.job(engine, valid_until);
        let generation = engine.state_generation().changes();
        let Some((tx, mut saver)) = self.saver else {
            return Ok(());
        };
        let done = async {
            if let Some(job) = job {
                let _ = tx.send(job).await;
            }
            drop(tx);
            let _ = (&mut saver).await;
        };
        if tokio::time::timeout(limit, done).await.is_err() {
            saver.abort();
        }
        let landed = self.landed.load(Ordering::Acquire);
        if landed >= generation {
            Ok(())
        } else {
            Err(Unsaved {
                changes: generation - landed,
            })
        }
    }
}

/// The final save did not land in time: what is not in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unsaved {
    /// How many changes were made since the last save that landed.
    pub(super) changes: u64,
}

/// Saves the jobs it is sent, in order; a failed save is tried again (every
/// second, merged with the newer jobs that came meanwhile) until one
/// succeeds; `landed` is set to the change generation of each save that lands. A save refused by the fence, or due after the term's validity,
/// is dropped and logged: another orchestrator serves.
async fn save_loop(
    store: Arc<dyn StateStore>,
    mut rx: mpsc::Receiver<SaveJob>,
    landed: Arc<AtomicU64>,
) {
    while let Some(mut job) = rx.recv().await {
        loop {
            if job.valid_until.is_some_and(|until| Instant::now() >= until) {
                tracing::error!(
                    store = %store.describe(),
                    records = job.write.records.len(),
                    "not saving: the lease ran out before the save (this process may have been paused); another orchestrator may serve"
                );
                break;
            }
            let started = Instant::now();
            match store.save(&job.write, job.fence.as_deref()).await {
                Ok(Saved::Written) => {
                    landed.store(job.generation.changes(), Ordering::Release);
                    tracing::debug!(
                        store = %store.describe(),
                        records = job.write.records.len(),
                        bytes = job.write.records.values().map(Vec::len).sum::<usize>(),
                        took = ?started.elapsed(),
                        "state saved"
                    );
                    break;
                }
                Ok(Saved::Fenced) => {
                    tracing::error!(
                        store = %store.describe(),
                        records = job.write.records.len(),
                        "save refused: this orchestrator no longer holds the lease; another one serves"
                    );
                    break;
                }
                Err(e) => {
                    tracing::warn!(store = %store.describe(), error = %e, "could not save the state; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    while let Ok(newer) = rx.try_recv() {
                        job.write.replace |= newer.write.replace;
                        job.write.records.extend(newer.write.records);
                        job.valid_until = newer.valid_until;
                        job.generation = newer.generation;
                        job.fence = newer.fence;
                    }
                }
            }
        }
    }
}
