//! [`StateStore`]: where the orchestrator keeps its state across restarts.

use crate::{BusError, ErrorDetail};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Saved records by name (the orchestrator's format says what they hold).
pub type Records = BTreeMap<String, Vec<u8>>;

/// What one save writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateWrite {
    /// Records to write, replacing those of the same names.
    pub records: Records,
    /// Whether every other record goes (a save of the whole state, say the
    /// first one after a migration from an older format); otherwise only
    /// `records` are written and the others stay.
    pub replace: bool,
}

/// What came of a save.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// The records were written.
    Written,
    /// The save was refused: its writer does not hold the lease that fences
    /// the store (another orchestrator serves). Nothing was written.
    Fenced,
}

/// A place for the orchestrator's state, as named records: it saves the
/// records that changed and loads them all when it starts. Implemented by a
/// file ([`FileStore`]), memory ([`MemoryStore`]) and the brokers that can keep
/// data (a Redis hash, NATS JetStream key-value entries).
///
/// A store made with a lease is **fenced**: a save or load given a `fence`
/// (the holder's name) lands only while that holder holds the lease.
///
/// The state contains API keys: a store must keep it where the keys themselves
/// may be kept.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// Every stored record, or `None` if nothing was ever saved. A value
    /// stored by an older keyman (one blob) comes as the one record `meta`.
    /// With `fence`, a fenced store first makes sure that this holder holds
    /// the lease and claims the store for it (later saves of earlier holders
    /// are refused); a holder that does not hold it gets an error.
    async fn load(&self, fence: Option<&str>) -> Result<Option<Records>, BusError>;

    /// Writes `write` atomically (Redis, a file and memory in one step; NATS
    /// writes new entries, then lands them all with one compare-and-set). With `fence`, a fenced store writes
    /// only while that holder holds the lease, else returns [`Saved::Fenced`].
    async fn save(&self, write: &StateWrite, fence: Option<&str>) -> Result<Saved, BusError>;

    /// Copies what is stored now aside, under a name made with `stamp_ms`
    /// (the wall clock, for a name that says when), without changing it.
    /// Returns the copy's name, or `None` if nothing is stored.
    async fn set_aside(&self, stamp_ms: u64) -> Result<Option<String>, BusError>;

    /// Where the state is kept, for logs (no credentials).
    fn describe(&self) -> String;
}

/// A [`StateStore`] in a file, for single-process use. Saves write a temporary
/// file beside it, sync it, rename it over the old one and sync the folder, so
/// a crash leaves the old state or the new one; on Unix the file is created
/// readable by its owner only (mode 0600).
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// A store at `path` (the file need not exist yet; its folder must).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn io_error(path: &Path, e: std::io::Error) -> BusError {
    BusError::Broker(ErrorDetail::with_source(
        format!("state file {}: {e}", path.display()),
        e,
    ))
}

fn write_atomically(path: &Path, state: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    // A temporary file left by an older run keeps its mode: owner only again.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(state)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    // The rename itself survives a crash once the folder is synced.
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The first line of a file that holds records (a file without it is one
/// record `meta`: what an older keyman wrote).
const FILE_HEADER: &str = "keyman-records";

/// A file's records: after [`FILE_HEADER`], one JSON object of names to values
/// (records are UTF-8 text; others are refused on save).
fn encode_file(records: &Records) -> Result<Vec<u8>, String> {
    let mut map = serde_json::Map::new();
    for (name, value) in records {
        let text =
            std::str::from_utf8(value).map_err(|_| format!("record {name:?} is not UTF-8 text"))?;
        map.insert(name.clone(), serde_json::Value::String(text.to_owned()));
    }
    let mut out = format!("{FILE_HEADER}\n").into_bytes();
    out.extend(serde_json::to_vec(&serde_json::Value::Object(map)).map_err(|e| e.to_string())?);
    Ok(out)
}

fn decode_file(bytes: Vec<u8>) -> Records {
    let header = format!("{FILE_HEADER}\n");
    if let Some(body) = bytes.strip_prefix(header.as_bytes())
        && let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(body)
        && map.values().all(serde_json::Value::is_string)
    {
        return map
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap_or_default().as_bytes().to_vec()))
            .collect();
    }
    Records::from([("meta".to_owned(), bytes)])
}

fn read_file(path: &Path) -> Result<Option<Vec<u8>>, BusError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path, e)),
    }
}

fn joined<T>(r: Result<Result<T, BusError>, tokio::task::JoinError>) -> Result<T, BusError> {
    r.map_err(|e| {
        BusError::Broker(ErrorDetail::with_source(
            format!("state file task failed: {e}"),
            e,
        ))
    })?
}

#[async_trait]
impl StateStore for FileStore {
    async fn load(&self, _fence: Option<&str>) -> Result<Option<Records>, BusError> {
        let path = self.path.clone();
        joined(tokio::task::spawn_blocking(move || Ok(read_file(&path)?.map(decode_file))).await)
    }

    async fn save(&self, write: &StateWrite, _fence: Option<&str>) -> Result<Saved, BusError> {
        let path = self.path.clone();
        let write = write.clone();
        joined(
            tokio::task::spawn_blocking(move || {
                let mut records = if write.replace {
                    Records::new()
                } else {
                    read_file(&path)?.map(decode_file).unwrap_or_default()
                };
                records.extend(write.records);
                let bytes = encode_file(&records).map_err(|e| {
                    BusError::Broker(format!("state file {}: {e}", path.display()).into())
                })?;
                write_atomically(&path, &bytes).map_err(|e| io_error(&path, e))?;
                Ok(Saved::Written)
            })
            .await,
        )
    }

    async fn set_aside(&self, stamp_ms: u64) -> Result<Option<String>, BusError> {
        let path = self.path.clone();
        joined(
            tokio::task::spawn_blocking(move || {
                let Some(bytes) = read_file(&path)? else {
                    return Ok(None);
                };
                let mut copy = path.as_os_str().to_owned();
                copy.push(format!(".unreadable.{stamp_ms}"));
                let copy = PathBuf::from(copy);
                write_atomically(&copy, &bytes).map_err(|e| io_error(&copy, e))?;
                Ok(Some(copy.display().to_string()))
            })
            .await,
        )
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }
}

/// A [`StateStore`] in memory, shared by its clones: for tests and for programs
/// that restart an orchestrator inside one process. Fenced by a
/// [`MemoryLease`](crate::MemoryLease) when made with [`fenced_by`](Self::fenced_by).
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<Option<Records>>>,
    copies: Arc<Mutex<Vec<(String, Records)>>>,
    lease: Option<crate::MemoryLease>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// This store (sharing its records), fenced by `lease`.
    pub fn fenced_by(&self, lease: crate::MemoryLease) -> Self {
        Self {
            lease: Some(lease),
            ..self.clone()
        }
    }

    /// Replaces what is stored, bypassing any fence (for tests).
    pub fn put(&self, records: Option<Records>) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = records;
    }

    /// The copies [`set_aside`](StateStore::set_aside) made: names and records.
    pub fn copies(&self) -> Vec<(String, Records)> {
        self.copies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn holds(&self, fence: Option<&str>) -> bool {
        match (&self.lease, fence) {
            (Some(lease), Some(holder)) => lease.holder().as_deref() == Some(holder),
            _ => true,
        }
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn load(&self, fence: Option<&str>) -> Result<Option<Records>, BusError> {
        if !self.holds(fence) {
            return Err(BusError::Broker(
                "the lease is not held by this holder".into(),
            ));
        }
        Ok(self.state.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    async fn save(&self, write: &StateWrite, fence: Option<&str>) -> Result<Saved, BusError> {
        if !self.holds(fence) {
            return Ok(Saved::Fenced);
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let records = state.get_or_insert_with(Records::new);
        if write.replace {
            records.clear();
        }
        records.extend(write.records.clone());
        Ok(Saved::Written)
    }

    async fn set_aside(&self, stamp_ms: u64) -> Result<Option<String>, BusError> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Ok(state.map(|records| {
            let name = format!("memory.unreadable.{stamp_ms}");
            self.copies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((name.clone(), records));
            name
        }))
    }

    fn describe(&self) -> String {
        "memory".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Lease;

    fn records(pairs: &[(&str, &str)]) -> Records {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    fn write(pairs: &[(&str, &str)], replace: bool) -> StateWrite {
        StateWrite {
            records: records(pairs),
            replace,
        }
    }

    #[tokio::test]
    async fn a_file_store_loads_what_it_saved_and_nothing_before() {
        let dir = std::env::temp_dir().join(format!("keyman-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = FileStore::new(dir.join("state.json"));
        assert_eq!(store.load(None).await.unwrap(), None);
        assert_eq!(store.set_aside(1).await.unwrap(), None);
        store
            .save(&write(&[("meta", "one"), ("a", "1")], false), None)
            .await
            .unwrap();
        store
            .save(&write(&[("meta", "two")], false), None)
            .await
            .unwrap();
        assert_eq!(
            store.load(None).await.unwrap(),
            Some(records(&[("meta", "two"), ("a", "1")]))
        );
        store.save(&write(&[("b", "2")], true), None).await.unwrap();
        assert_eq!(
            store.load(None).await.unwrap(),
            Some(records(&[("b", "2")]))
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(store.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "only the owner may read the state");
        }
        // A file an older keyman wrote is one record; a copy keeps its bytes.
        std::fs::write(store.path(), b"{\"platforms\": []}").unwrap();
        assert_eq!(
            store.load(None).await.unwrap(),
            Some(records(&[("meta", "{\"platforms\": []}")]))
        );
        let copy = store.set_aside(42).await.unwrap().unwrap();
        assert!(copy.ends_with("state.json.unreadable.42"), "{copy}");
        assert_eq!(std::fs::read(&copy).unwrap(), b"{\"platforms\": []}");
        let bad = FileStore::new(dir.join("no-such-folder").join("state.json"));
        assert!(matches!(
            bad.save(&write(&[("meta", "x")], false), None).await,
            Err(BusError::Broker(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_memory_store_is_shared_by_its_clones_and_fenced_by_its_lease() {
        let a = MemoryStore::new();
        let b = a.clone();
        assert_eq!(b.load(None).await.unwrap(), None);
        a.save(&write(&[("meta", "x")], false), None).await.unwrap();
        assert_eq!(b.load(None).await.unwrap(), Some(records(&[("meta", "x")])));

        let lease = crate::MemoryLease::new("leader");
        let fenced = a.fenced_by(lease.clone());
        assert!(
            lease
                .try_acquire("one", std::time::Duration::from_secs(9))
                .await
                .unwrap()
        );
        assert_eq!(
            fenced
                .save(&write(&[("meta", "y")], false), Some("one"))
                .await
                .unwrap(),
            Saved::Written
        );
        assert_eq!(
            fenced
                .save(&write(&[("meta", "z")], false), Some("two"))
                .await
                .unwrap(),
            Saved::Fenced
        );
        assert!(fenced.load(Some("two")).await.is_err());
        assert_eq!(b.load(None).await.unwrap(), Some(records(&[("meta", "y")])));
        assert_eq!(
            a.set_aside(7).await.unwrap().as_deref(),
            Some("memory.unreadable.7")
        );
        assert_eq!(a.copies().len(), 1);
    }
}
