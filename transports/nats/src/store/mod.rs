//! [`NatsStore`]: state in JetStream key-value entries, over the JetStream
//! API directly (the stream `KV_{bucket}`, one value per entry), laid out as
//! the `layout` module says: every save writes new entries and lands at one
//! compare-and-set of an index entry, which is also its fence.

use crate::NatsBus;
use crate::layout::{self, Generation, INDEX, Index, MIGRATED, UNREADABLE};
use async_trait::async_trait;
use keyman_transport::{BusError, Records, Saved, StateStore, StateWrite};
use std::collections::BTreeMap;
use std::sync::Arc;

impl NatsBus {
    /// A [`StateStore`] under entry name `key` of the JetStream key-value
    /// bucket `bucket` (its stream `KV_{bucket}` is created on first use,
    /// keeping one value per entry; the server must run with JetStream).
    /// Each record is an entry of its own, limited by the server's largest
    /// message (1 MiB by default). It speaks the JetStream API directly, so
    /// it works with servers from 2.9 on.
    pub fn state_store(&self, bucket: impl Into<String>, key: impl Into<String>) -> NatsStore {
        NatsStore {
            bus: self.clone(),
            bucket: bucket.into(),
            key: key.into(),
            ready: Arc::new(tokio::sync::OnceCell::new()),
            lease: None,
            session: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }
}

/// What a store knows of the state it claimed: who claimed it, the index as
/// it committed it last and that write's sequence, and each record's
/// current generation.
#[derive(Debug, Clone)]
struct Session {
    /// The holder that claimed (`None` for an unfenced store).
    holder: Option<String>,
    /// The sequence of this store's last write of the index.
    seq: u64,
    /// The epoch: the sequence of the claim's index write.
    epoch: u64,
    /// The counter of the last save of this epoch.
    counter: u64,
    index: Index,
    current: BTreeMap<String, Generation>,
}

/// A [`StateStore`] in entries of a NATS JetStream key-value bucket, laid
/// out as described in the crate's `layout` module: an index entry
/// `key.index`, each record in an entry `key.s.<epoch>.<counter>.<record>`
/// that is written once, copies set aside in `key.unreadable.<ms>[.r]`.
/// Records of older keyman versions (`meta` in `key`, each other record `r`
/// in `key.r`) are read and moved to that layout by the first load of a
/// holder. Made by [`NatsBus::state_store`]; fenced by
/// [`NatsStore::fenced_by`].
#[derive(Clone)]
pub struct NatsStore {
    pub(crate) bus: NatsBus,
    pub(crate) bucket: String,
    pub(crate) key: String,
    ready: Arc<tokio::sync::OnceCell<()>>,
    lease: Option<Box<crate::NatsLease>>,
    session: Arc<tokio::sync::Mutex<Option<Session>>>,
}

impl std::fmt::Debug for NatsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStore")
            .field("server", &self.bus.server())
            .field("bucket", &self.bucket)
            .field("key", &self.key)
            .finish()
    }
}

/// JetStream's error code for "wrong last sequence": someone else wrote the
/// subject since it was read.
pub(crate) const WRONG_LAST_SEQUENCE: u64 = 10071;
/// JetStream's error code for "stream name already in use".
const STREAM_NAME_IN_USE: u64 = 10058;
/// JetStream's error code for "subjects overlap with an existing stream": what
/// the slower of two clients creating the same stream at once may get.
const SUBJECTS_OVERLAP: u64 = 10065;
/// JetStream's error code for "no message found".
pub(crate) const NO_MESSAGE_FOUND: u64 = 10037;

/// How many entries one step reads, writes or removes at once.
const AT_ONCE: usize = 32;

/// How many times a claim reads the index again when another one wrote it
/// in between.
const CLAIM_ATTEMPTS: usize = 5;

/// A save whose entries are written and which has yet to commit.
struct Staged {
    generation: Generation,
    replace: bool,
    names: Vec<String>,
}

impl NatsStore {
    /// This store, fenced by `lease`: a load with a holder checks that it
    /// holds the lease and claims the store for it (rewrites the index,
    /// expecting the sequence it read); each save of that holder commits by
    /// rewriting the index expecting the sequence of its own last write. Once
    /// another holder has claimed the store, the save is refused and what it
    /// wrote is never read (see the `layout` module).
    pub fn fenced_by(mut self, lease: &crate::NatsLease) -> Self {
        self.lease = Some(Box::new(lease.clone()));
        self
    }

    /// The entry `name` under this store's entry name.
    fn entry(&self, name: &str) -> String {
        format!("{}.{name}", self.key)
    }

    /// The entry of record `name` in the layout before the index.
    fn legacy_entry(&self, name: &str) -> String {
        if name == "meta" {
            self.key.clone()
        } else {
            self.entry(name)
        }
    }

    /// The index and its sequence, if there is one.
    async fn read_index(&self) -> Result<Option<(u64, Index)>, BusError> {
        let Some((seq, bytes)) = self.get(&self.entry(INDEX)).await? else {
            return Ok(None);
        };
        Index::decode(&bytes)
            .map(|i| Some((seq, i)))
            .map_err(|why| {
                BusError::Broker(
                    format!(
                        "the index of the saved state in {} is unreadable: {why}",
                        self.describe()
                    )
                    .into(),
                )
            })
    }

    /// The records of the layout before the index, and their entries.
    async fn legacy(&self) -> Result<(Records, Vec<String>), BusError> {
        let mut entries: Vec<(String, String)> = self
            .names(None)
            .await?
            .into_iter()
            .filter(|n| layout::is_legacy_record(n))
            .map(|n| {
                let e = self.legacy_entry(&n);
                (n, e)
            })
            .collect();
        let mut records = Records::new();
        if let Some((_, meta)) = self.get(&self.key).await? {
            records.insert("meta".to_owned(), meta);
            entries.retain(|(n, _)| n != "meta");
        }
        // A record removed meanwhile is left out: another claim moved it.
        for chunk in entries.chunks(AT_ONCE) {
            let values =
                futures_util::future::join_all(chunk.iter().map(|(_, e)| self.get(e))).await;
            for ((name, _), value) in chunk.iter().zip(values) {
                if let Some((_, v)) = value? {
                    records.insert(name.clone(), v);
                }
            }
        }
        let mut all: Vec<String> = entries.into_iter().map(|(_, e)| e).collect();
        if records.contains_key("meta") {
            all.push(self.key.clone());
        }
        // The fence entry of that layout, which the index replaces.
        let fence = format!("fence.{}", self.key);
        if self.get(&fence).await?.is_some() {
            all.push(fence);
        }
        Ok((records, all))
    }

    /// Claims the store for `holder` (its epoch begins), after checking that
    /// it holds the lease if the store is fenced; `None` if it does not.
    /// Moves records of the older layout, and removes garbage.
    async fn claim(&self, holder: Option<&str>) -> Result<Option<Session>, BusError> {
        if let (Some(lease), Some(h)) = (&self.lease, holder)
            && lease.holder_now().await?.as_deref() != Some(h)
        {
            return Ok(None);
        }
        for _ in 0..CLAIM_ATTEMPTS {
            let (seq, index, legacy) = match self.read_index().await? {
                Some((seq, index)) => (seq, index, Vec::new()),
                None => {
                    let (records, entries) = self.legacy().await?;
                    let writes: Vec<(String, &[u8])> = records
                        .iter()
                        .map(|(n, v)| (self.entry(&layout::saved_name(MIGRATED, n)), &v[..]))
                        .collect();
                    self.put_all(&writes).await?;
                    let mut index = Index::default();
                    if !records.is_empty() {
                        index.epochs.insert(MIGRATED.0, MIGRATED.1);
                    }
                    (0, index, entries)
                }
            };
            let Some(epoch) = self
                .put(&self.entry(INDEX), &index.encode(), Some(seq))
                .await?
            else {
                continue;
            };
            self.purge_all(&legacy).await;
            let names = self.names(Some(layout::SAVED)).await?;
            let (current, garbage) = layout::current(&index, names.iter().map(String::as_str));
            self.purge_all(
                &garbage
                    .iter()
                    .map(|g| self.entry(g))
                    .collect::<Vec<String>>(),
            )
            .await;
            return Ok(Some(Session {
                holder: holder.map(str::to_owned),
                seq: epoch,
                epoch,
                counter: 0,
                index,
                current,
            }));
        }
        Err(BusError::Broker(
            format!(
                "the saved state in {} kept changing while this orchestrator claimed it",
                self.describe()
            )
            .into(),
        ))
    }

    /// The records `current` names; `None` if one of them is gone.
    async fn read_current(
        &self,
        current: &BTreeMap<String, Generation>,
    ) -> Result<Option<Records>, BusError> {
        let entries: Vec<(String, String)> = current
            .iter()
            .map(|(n, g)| (n.clone(), self.entry(&layout::saved_name(*g, n))))
            .collect();
        self.get_all(&entries).await
    }

    /// Reads the state without claiming it: what the index commits, or the
    /// records of the older layout where there is no index.
    async fn read(&self) -> Result<Records, BusError> {
        for _ in 0..CLAIM_ATTEMPTS {
            let Some((_, index)) = self.read_index().await? else {
                return Ok(self.legacy().await?.0);
            };
            let names = self.names(Some(layout::SAVED)).await?;
            let (current, _) = layout::current(&index, names.iter().map(String::as_str));
            if let Some(records) = self.read_current(&current).await? {
                return Ok(records);
            }
        }
        Err(BusError::Broker(
            format!(
                "the saved state in {} kept changing while it was read",
                self.describe()
            )
            .into(),
        ))
    }

    /// The holder a save or load of `fence` acts for: the fence on a fenced
    /// store, no one on an unfenced one.
    fn holder<'a>(&self, fence: Option<&'a str>) -> Option<&'a str> {
        fence.filter(|_| self.lease.is_some())
    }

    /// Writes the entries of the next save of `session` (nothing is read
    /// from them until it commits).
    async fn stage(&self, session: &mut Session, write: &StateWrite) -> Result<Staged, BusError> {
        session.counter += 1;
        let generation = (session.epoch, session.counter);
        let names: Vec<String> = write
            .records
            .keys()
            .map(|n| self.entry(&layout::saved_name(generation, n)))
            .collect();
        let writes: Vec<(String, &[u8])> = names
            .iter()
            .cloned()
            .zip(write.records.values().map(Vec::as_slice))
            .collect();
        self.put_all(&writes).await?;
        Ok(Staged {
            generation,
            replace: write.replace,
            names,
        })
    }

    /// Commits a staged save: rewrites the index expecting the sequence of
    /// this session's last write. `false` if another claim came first (the
    /// staged entries are removed); after `false` or an error the session no
    /// longer matches the store and is dropped.
    async fn commit(
        &self,
        session: &mut Session,
        staged: Staged,
        records: &Records,
    ) -> Result<bool, BusError> {
        // The caller drops the session unless this commit lands (another
        // claim came first, or an error): it is updated in place.
        let mut superseded = Vec::new();
        if staged.replace {
            for (name, g) in std::mem::take(&mut session.current) {
                superseded.push(self.entry(&layout::saved_name(g, &name)));
            }
        }
        for name in records.keys() {
            if let Some(old) = session.current.insert(name.clone(), staged.generation) {
                superseded.push(self.entry(&layout::saved_name(old, name)));
            }
        }
        let index = session
            .index
            .after(staged.generation, staged.replace, &session.current);
        let Some(seq) = self
            .put(&self.entry(INDEX), &index.encode(), Some(session.seq))
            .await?
        else {
            self.purge_all(&staged.names).await;
            return Ok(false);
        };
        session.seq = seq;
        session.index = index;
        self.purge_all(&superseded).await;
        Ok(true)
    }
}

#[async_trait]
impl StateStore for NatsStore {
    async fn load(&self, fence: Option<&str>) -> Result<Option<Records>, BusError> {
        self.ensure_stream().await?;
        let Some(holder) = self.holder(fence) else {
            let records = self.read().await?;
            return Ok((!records.is_empty()).then_some(records));
        };
        let mut session = self.session.lock().await;
        *session = None;
        for _ in 0..CLAIM_ATTEMPTS {
            let Some(claimed) = self.claim(Some(holder)).await? else {
                return Err(BusError::Broker(
                    "the lease is no longer held by this orchestrator".into(),
                ));
            };
            // Only a later claim removes a current entry: then claim again.
            if let Some(records) = self.read_current(&claimed.current).await? {
                *session = Some(claimed);
                return Ok((!records.is_empty()).then_some(records));
            }
        }
        Err(BusError::Broker(
            format!(
                "the saved state in {} kept changing while it was loaded",
                self.describe()
            )
            .into(),
        ))
    }

    async fn save(&self, write: &StateWrite, fence: Option<&str>) -> Result<Saved, BusError> {
        self.ensure_stream().await?;
        let holder = self.holder(fence);
        let mut guard = self.session.lock().await;
        for _ in 0..CLAIM_ATTEMPTS {
            let mut session = match guard.take() {
                Some(s) if s.holder.as_deref() == holder => s,
                _ => match self.claim(holder).await? {
                    Some(s) => s,
                    None => return Ok(Saved::Fenced),
                },
            };
            let staged = self.stage(&mut session, write).await;
            let staged = match staged {
                Ok(s) => s,
                Err(err) => {
                    *guard = Some(session);
                    return Err(err);
                }
            };
            if self.commit(&mut session, staged, &write.records).await? {
                *guard = Some(session);
                return Ok(Saved::Written);
            }
            if holder.is_some() {
                return Ok(Saved::Fenced);
            }
            // Unfenced: another writer claimed meanwhile; claim again.
        }
        Err(BusError::Broker(
            format!(
                "the saved state in {} kept changing while it was saved",
                self.describe()
            )
            .into(),
        ))
    }

    async fn set_aside(&self, stamp_ms: u64) -> Result<Option<String>, BusError> {
        let Some(records) = self.load(None).await? else {
            return Ok(None);
        };
        let copy = format!("{}.{UNREADABLE}.{stamp_ms}", self.key);
        let writes: Vec<(String, &[u8])> = records
            .iter()
            .map(|(name, value)| {
                let entry = if name == "meta" {
                    copy.clone()
                } else {
                    format!("{copy}.{name}")
                };
                (entry, value.as_slice())
            })
            .collect();
        self.put_all(&writes).await?;
        Ok(Some(format!("NATS key-value {}/{copy}", self.bucket)))
    }

    fn describe(&self) -> String {
        format!(
            "NATS key-value {}/{} on {}",
            self.bucket,
            self.key,
            self.bus.server()
        )
    }
}

mod entries;
#[cfg(test)]
mod tests;
