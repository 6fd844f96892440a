//! presage's durable state behind a narrow key-value interface, shared by the agent (history,
//! reservations, calibration, simulated membership) and the coordinator (plan journal, drain
//! marks).
//!
//! Everything either daemon persists is written through [`KvStore`] / [`KvTree`], never through
//! sled directly, so the engine can be swapped
//! (sled's last stable release is from 2021; redb or fjall are the likely successors) by writing
//! one backend and passing [`conformance`]'s suite. Three backends exist: [`SledStore`] (the
//! embedded default), [`EtcdStore`] (a coordinator's state shared with its standbys, on an etcd
//! cluster) and [`MemoryStore`] (tests and simulations that need no durability).

mod etcd_backend;
mod etcd_election;
mod etcd_health;
mod etcd_warm_copy;
mod memory;
mod sled_backend;

pub use etcd_backend::{EtcdConfig, EtcdStore, EtcdTls, Fence, MAX_TXN_OPS};
pub use etcd_election::{LeaderInfo, Leadership, LeaseTiming, Mandate};
pub use etcd_health::{Candidate, EndpointHealth, EndpointStatus};
pub use etcd_warm_copy::{CopyProgress, PROGRESS_EVERY, STANDBYS_TREE, WarmCopy};
pub use memory::MemoryStore;
pub use sled_backend::SledStore;

use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {detail} (the files were left untouched)")]
    Open { path: std::path::PathBuf, detail: String },
    #[error("store I/O failed: {0}")]
    Io(String),
    #[error("store at {path} has schema version {found}, this build understands up to {supported}; refusing to touch it")]
    Schema { path: std::path::PathBuf, found: u32, supported: u32 },
    /// A fenced write refused: this writer no longer holds what it was fenced on.
    #[error("write refused by its fence: {0}")]
    Fenced(String),
    /// A write to a read-only view (a standby's warm copy).
    #[error("read-only: {0}")]
    ReadOnly(String),
}

/// One change in an atomic batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    Insert(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
}

/// One entry of a scan: key and value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Scan order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Ascending,
    Descending,
}

/// A set of named, independently keyed trees.
pub trait KvStore: Send + Sync {
    /// Opens (creating if needed) the tree called `name`.
    fn tree(&self, name: &str) -> Result<Arc<dyn KvTree>, StoreError>;
    /// Makes every write so far durable.
    fn flush(&self) -> Result<(), StoreError>;
}

/// An ordered map from byte keys to byte values.
pub trait KvTree: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    fn remove(&self, key: &[u8]) -> Result<(), StoreError>;
    /// Applies all operations or none.
    fn apply(&self, ops: Vec<BatchOp>) -> Result<(), StoreError>;
    /// Up to `limit` entries whose key starts with `prefix`, in key order or reverse key order.
    fn scan_prefix(&self, prefix: &[u8], order: Order, limit: usize) -> Result<Vec<KeyValue>, StoreError>;
    /// How many keys start with `prefix`.
    fn count_prefix(&self, prefix: &[u8]) -> Result<usize, StoreError>;
}

/// The behaviour every [`KvStore`] backend must show. Each backend's tests call [`run_all`]
/// with a factory that opens the backend at a given directory (reopening must see earlier data
/// when the backend is durable).
pub mod conformance {
    use super::*;
    use std::path::Path;

    pub fn run_all(open: &dyn Fn(&Path) -> Box<dyn KvStore>, durable: bool) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        point_operations(&*store);
        prefix_scans(&*store);
        batches(&*store);
        trees_are_independent(&*store);
        if durable {
            store.tree("persist").unwrap().insert(b"k", b"v").unwrap();
            store.flush().unwrap();
            drop(store);
            let again = open(dir.path());
            assert_eq!(again.tree("persist").unwrap().get(b"k").unwrap(), Some(b"v".to_vec()), "data survives reopen");
        }
    }

    fn point_operations(s: &dyn KvStore) {
        let t = s.tree("points").unwrap();
        assert_eq!(t.get(b"a").unwrap(), None);
        t.insert(b"a", b"1").unwrap();
        t.insert(b"a", b"2").unwrap();
        assert_eq!(t.get(b"a").unwrap(), Some(b"2".to_vec()), "insert overwrites");
        t.remove(b"a").unwrap();
        t.remove(b"a").unwrap();
        assert_eq!(t.get(b"a").unwrap(), None, "remove is idempotent");
    }

    fn prefix_scans(s: &dyn KvStore) {
        let t = s.tree("scan").unwrap();
        for k in ["vm1\0\x03", "vm1\0\x01", "vm1\0\x02", "vm10\0\x01", "vm0\0\x09"] {
            t.insert(k.as_bytes(), k.as_bytes()).unwrap();
        }
        let asc: Vec<_> = t.scan_prefix(b"vm1\0", Order::Ascending, usize::MAX).unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(asc, vec![b"vm1\0\x01".to_vec(), b"vm1\0\x02".to_vec(), b"vm1\0\x03".to_vec()]);
        let desc = t.scan_prefix(b"vm1\0", Order::Descending, 2).unwrap();
        assert_eq!(desc.len(), 2);
        assert_eq!(desc[0].0, b"vm1\0\x03".to_vec());
        assert_eq!(desc[1].1, b"vm1\0\x02".to_vec());
        assert_eq!(t.count_prefix(b"vm1").unwrap(), 4);
        assert_eq!(t.count_prefix(b"vm1\0").unwrap(), 3);
        assert_eq!(t.count_prefix(b"zz").unwrap(), 0);
        assert!(t.scan_prefix(b"zz", Order::Ascending, 10).unwrap().is_empty());
    }

    fn batches(s: &dyn KvStore) {
        let t = s.tree("batch").unwrap();
        t.insert(b"old", b"x").unwrap();
        t.apply(vec![
            BatchOp::Insert(b"new1".to_vec(), b"1".to_vec()),
            BatchOp::Remove(b"old".to_vec()),
            BatchOp::Insert(b"new2".to_vec(), b"2".to_vec()),
        ])
        .unwrap();
        assert_eq!(t.get(b"old").unwrap(), None);
        assert_eq!(t.get(b"new2").unwrap(), Some(b"2".to_vec()));
        assert_eq!(t.count_prefix(b"new").unwrap(), 2);
    }

    fn trees_are_independent(s: &dyn KvStore) {
        let a = s.tree("ta").unwrap();
        let b = s.tree("tb").unwrap();
        a.insert(b"k", b"a").unwrap();
        assert_eq!(b.get(b"k").unwrap(), None);
        assert_eq!(s.tree("ta").unwrap().get(b"k").unwrap(), Some(b"a".to_vec()), "same name, same tree");
    }
}
