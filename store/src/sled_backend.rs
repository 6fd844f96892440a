//! The sled-backed [`KvStore`] the agent ships with.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{BatchOp, KvStore, KvTree, Order, StoreError};

/// Bytes of page cache sled may keep; the agent must stay small on the hypervisor.
const CACHE_BYTES: u64 = 4 << 20;
/// sled's background flusher releases the file lock shortly after the last handle is dropped,
/// so a reopen in the same process (an in-process restart) waits this long for the lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

pub struct SledStore {
    db: sled::Db,
    path: PathBuf,
}

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

impl SledStore {
    /// Opens or creates the store in `dir`. A store another process holds, or files sled cannot
    /// read, give [`StoreError::Open`] naming the directory; nothing is deleted or rewritten.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            let opened = sled::Config::new().path(dir).cache_capacity(CACHE_BYTES).flush_every_ms(Some(1000)).open();
            match opened {
                Ok(db) => return Ok(SledStore { db, path: dir.into() }),
                Err(sled::Error::Io(e)) if is_lock_error(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(sled::Error::Io(e)) if is_lock_error(&e) => {
                    return Err(StoreError::Open { path: dir.into(), detail: format!("another process holds its lock ({e})") });
                }
                Err(e) => return Err(StoreError::Open { path: dir.into(), detail: e.to_string() }),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

/// sled reports a held file lock as an I/O error whose text says so (the OS error is inside).
fn is_lock_error(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

struct SledTree(sled::Tree);

impl KvStore for SledStore {
    fn tree(&self, name: &str) -> Result<Arc<dyn KvTree>, StoreError> {
        Ok(Arc::new(SledTree(self.db.open_tree(name).map_err(io)?)))
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(io)
    }
}

impl KvTree for SledTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(key).map_err(io)?.map(|v| v.to_vec()))
    }
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.0.insert(key, value).map(|_| ()).map_err(io)
    }
    fn remove(&self, key: &[u8]) -> Result<(), StoreError> {
        self.0.remove(key).map(|_| ()).map_err(io)
    }
    fn apply(&self, ops: Vec<BatchOp>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for op in ops {
            match op {
                BatchOp::Insert(k, v) => batch.insert(k, v),
                BatchOp::Remove(k) => batch.remove(k),
            }
        }
        self.0.apply_batch(batch).map_err(io)
    }
    fn scan_prefix(&self, prefix: &[u8], order: Order, limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        let iter = self.0.scan_prefix(prefix);
        let collect = |it: &mut dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>| {
            it.take(limit).map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(io)).collect()
        };
        match order {
            Order::Ascending => collect(&mut { iter }),
            Order::Descending => collect(&mut iter.rev()),
        }
    }
    fn count_prefix(&self, prefix: &[u8]) -> Result<usize, StoreError> {
        let mut n = 0;
        for r in self.0.scan_prefix(prefix).keys() {
            r.map_err(io)?;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_the_store_conformance_suite() {
        crate::conformance::run_all(&|p| Box::new(SledStore::open(&p.join("db")).unwrap()), true);
    }

    #[test]
    fn a_store_held_by_another_handle_is_an_error_not_a_panic() {
        let d = tempfile::tempdir().unwrap();
        let _held = SledStore::open(d.path()).unwrap();
        // sled takes an exclusive file lock; a second open must fail cleanly.
        let err = SledStore::open(d.path()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(&d.path().display().to_string()), "{err}");
    }

    #[test]
    fn a_corrupt_store_is_an_error_and_is_left_untouched() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(d.path()).unwrap();
            s.tree("t").unwrap().insert(b"k", b"v").unwrap();
            s.flush().unwrap();
        }
        let conf = d.path().join("conf");
        std::fs::write(&conf, b"\xff\xfe garbage that is not a sled config").unwrap();
        let before = std::fs::read(&conf).unwrap();
        let err = SledStore::open(d.path()).err().expect("corrupt store must not open");
        assert!(matches!(err, StoreError::Open { .. }), "{err}");
        assert_eq!(std::fs::read(&conf).unwrap(), before, "files untouched");
        assert!(d.path().join("db").exists(), "data file kept");
    }
}
