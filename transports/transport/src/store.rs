//! [`StateStore`]: where the orchestrator keeps its state across restarts.

use crate::{BusError, ErrorDetail};
use async_trait::async_trait;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A place for one blob of state: the orchestrator saves its key pool there
/// after changes and loads it when it starts. Implemented by a file
/// ([`FileStore`]), memory ([`MemoryStore`]) and the brokers that can keep data
/// (a Redis key, a NATS JetStream key-value entry).
///
/// The state contains API keys: a store must keep it where the keys themselves
/// may be kept.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// The stored state, or `None` if nothing was ever saved.
    async fn load(&self) -> Result<Option<Vec<u8>>, BusError>;

    /// Replaces the stored state, atomically: a later `load` sees either the old
    /// or the new state, never a mix.
    async fn save(&self, state: &[u8]) -> Result<(), BusError>;

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

#[async_trait]
impl StateStore for FileStore {
    async fn load(&self) -> Result<Option<Vec<u8>>, BusError> {
        let path = self.path.clone();
        let read = tokio::task::spawn_blocking(move || match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path, e)),
        });
        read.await.map_err(|e| {
            BusError::Broker(ErrorDetail::with_source(
                format!("state file reader failed: {e}"),
                e,
            ))
        })?
    }

    async fn save(&self, state: &[u8]) -> Result<(), BusError> {
        let path = self.path.clone();
        let state = state.to_vec();
        let write = tokio::task::spawn_blocking(move || {
            write_atomically(&path, &state).map_err(|e| io_error(&path, e))
        });
        write.await.map_err(|e| {
            BusError::Broker(ErrorDetail::with_source(
                format!("state file writer failed: {e}"),
                e,
            ))
        })?
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }
}

/// A [`StateStore`] in memory, shared by its clones: for tests and for programs
/// that restart an orchestrator inside one process.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<Option<Vec<u8>>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn load(&self) -> Result<Option<Vec<u8>>, BusError> {
        Ok(self.state.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    async fn save(&self, state: &[u8]) -> Result<(), BusError> {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = Some(state.to_vec());
        Ok(())
    }

    fn describe(&self) -> String {
        "memory".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_store_loads_what_it_saved_and_nothing_before() {
        let dir = std::env::temp_dir().join(format!("keyman-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = FileStore::new(dir.join("state.json"));
        assert_eq!(store.load().await.unwrap(), None);
        store.save(b"one").await.unwrap();
        store.save(b"two").await.unwrap();
        assert_eq!(store.load().await.unwrap().as_deref(), Some(&b"two"[..]));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(store.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "only the owner may read the state");
        }
        let bad = FileStore::new(dir.join("no-such-folder").join("state.json"));
        assert!(matches!(bad.save(b"x").await, Err(BusError::Broker(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_memory_store_is_shared_by_its_clones() {
        let a = MemoryStore::new();
        let b = a.clone();
        assert_eq!(b.load().await.unwrap(), None);
        a.save(b"x").await.unwrap();
        assert_eq!(b.load().await.unwrap().as_deref(), Some(&b"x"[..]));
    }
}
