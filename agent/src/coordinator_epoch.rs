//! The newest coordinator leadership this agent has seen (tree `coordinator`, key `epoch`):
//! a coordinator whose epoch is older — a leader deposed while it was cut off or frozen — is
//! refused its session and its commands. A newer epoch is written (and flushed) before the
//! agent takes anything from that leader, so a restarted agent still knows it. Epoch 0 is a
//! coordinator that is not elected (a single coordinator on sled): admitted, as there is no
//! older leader to fence.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::{KvStore, KvTree, StoreError};

pub const TREE: &str = "coordinator";
const KEY: &[u8] = b"epoch";

#[derive(Debug, thiserror::Error)]
pub enum EpochError {
    #[error("a coordinator of epoch {offered} is older than the leader of epoch {newest} this agent has seen; refused")]
    Stale { offered: u64, newest: u64 },
    #[error("the coordinator epoch in the store is unreadable ({0}); it was left in place")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct EpochGuard {
    store: Arc<dyn KvStore>,
    tree: Arc<dyn KvTree>,
    newest: AtomicU64,
    /// Serialises admissions (read, compare, write).
    writing: std::sync::Mutex<()>,
}

impl EpochGuard {
    pub fn open(store: Arc<dyn KvStore>) -> Result<EpochGuard, EpochError> {
        let tree = store.tree(TREE)?;
        let newest = match tree.get(KEY)? {
            None => 0,
            Some(v) => u64::from_be_bytes(v.as_slice().try_into().map_err(|_| EpochError::Corrupt(format!("{} bytes, not 8", v.len())))?),
        };
        Ok(EpochGuard { store, tree, newest: AtomicU64::new(newest), writing: std::sync::Mutex::new(()) })
    }

    pub fn newest(&self) -> u64 {
        self.newest.load(Ordering::SeqCst)
    }

    /// Takes a coordinator of `epoch`: refused if older than the newest seen; a newer one
    /// recorded durably first.
    pub fn admit(&self, epoch: u64) -> Result<(), EpochError> {
        if epoch == 0 {
            return Ok(());
        }
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let newest = self.newest();
        if epoch < newest {
            return Err(EpochError::Stale { offered: epoch, newest });
        }
        if epoch > newest {
            self.tree.insert(KEY, &epoch.to_be_bytes())?;
            self.store.flush()?;
            self.newest.store(epoch, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Whether a command of `epoch` may run (no write: its session was admitted already).
    pub fn allows(&self, epoch: u64) -> Result<(), EpochError> {
        let newest = self.newest();
        if epoch != 0 && epoch < newest { Err(EpochError::Stale { offered: epoch, newest }) } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    #[test]
    fn an_older_leader_is_refused_across_restarts_and_a_newer_one_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let open = || EpochGuard::open(Arc::new(SledStore::open(&dir.path().join("s")).unwrap())).unwrap();
        let g = open();
        assert_eq!(g.newest(), 0);
        g.admit(7).unwrap();
        g.admit(7).unwrap();
        assert!(matches!(g.admit(5), Err(EpochError::Stale { offered: 5, newest: 7 })));
        assert!(g.allows(5).is_err() && g.allows(7).is_ok() && g.allows(0).is_ok());
        g.admit(0).unwrap();
        drop(g);
        let g = open();
        assert_eq!(g.newest(), 7, "kept across a restart");
        assert!(g.admit(6).is_err());
        g.admit(9).unwrap();
        drop(g);
        assert_eq!(open_newest(&dir), 9);
    }

    fn open_newest(dir: &tempfile::TempDir) -> u64 {
        EpochGuard::open(Arc::new(SledStore::open(&dir.path().join("s")).unwrap())).map(|g| g.newest()).unwrap_or(0)
    }

    #[test]
    fn a_damaged_record_is_an_error_that_names_it_and_is_left_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn KvStore> = Arc::new(SledStore::open(&dir.path().join("s")).unwrap());
        store.tree(TREE).unwrap().insert(KEY, b"xyz").unwrap();
        let e = EpochGuard::open(store.clone()).err().unwrap().to_string();
        assert!(e.contains("unreadable") && e.contains("3 bytes"), "{e}");
        assert_eq!(store.tree(TREE).unwrap().get(KEY).unwrap(), Some(b"xyz".to_vec()));
    }
}
