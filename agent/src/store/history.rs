//! Bounded per-VM sample history: the last N samples of every VM, kept across agent restarts.
//! Forecasting (later) reads it; today it is what survives a restart or a coordinator outage.
//!
//! Layout in the `history` tree: key = VM id, 0x00, sample time (ms since the epoch, big-endian),
//! so one VM's samples are contiguous and time-ordered; value = a format byte, then the sample as
//! protobuf (which older and newer agents can both read).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use presage_protocol::pb::VmSample;
use prost::Message;

use super::{BatchOp, KvStore, KvTree, Order, StoreError};

/// Version of the layout above, kept in the `meta` tree.
pub const HISTORY_SCHEMA: u32 = 1;
const RECORD_FORMAT: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("VM id {0:?} cannot be stored: it is empty or contains a NUL byte")]
    BadVmId(String),
    #[error("history record {key} is corrupt: {detail}")]
    Corrupt { key: String, detail: String },
}

pub struct SampleHistory {
    tree: Arc<dyn KvTree>,
    per_vm: usize,
    /// Cached sample count per VM, loaded lazily from the tree.
    counts: Mutex<HashMap<String, usize>>,
}

/// The start of every key of `vm` in a tree keyed by VM and a number (the history's sample
/// times, the forecaster's steps).
pub(crate) fn vm_prefix(vm: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(vm.len() + 9);
    k.extend_from_slice(vm.as_bytes());
    k.push(0);
    k
}

/// VM id, 0x00, `n` big-endian: one VM's keys are contiguous and ordered by `n`.
pub(crate) fn vm_key(vm: &str, n: u64) -> Vec<u8> {
    let mut k = vm_prefix(vm);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// The VM id and number of a [`vm_key`]; `None` for a key of another shape.
pub(crate) fn split_vm_key(k: &[u8]) -> Option<(&str, u64)> {
    let (head, n) = k.split_at_checked(k.len().checked_sub(8)?)?;
    let (vm, nul) = head.split_at_checked(head.len().checked_sub(1)?)?;
    (nul == [0]).then_some(())?;
    Some((std::str::from_utf8(vm).ok()?, u64::from_be_bytes(n.try_into().ok()?)))
}

pub(crate) fn describe(k: &[u8]) -> String {
    String::from_utf8_lossy(k).replace('\0', "@")
}

impl SampleHistory {
    /// Opens the history in `store`, keeping at most `per_vm` samples per VM. `location` only
    /// names the store in errors.
    pub fn open(store: &dyn KvStore, per_vm: usize, location: &Path) -> Result<SampleHistory, HistoryError> {
        let meta = store.tree("meta")?;
        match meta.get(b"history_schema")? {
            None => meta.insert(b"history_schema", &HISTORY_SCHEMA.to_be_bytes())?,
            Some(v) => {
                let found = v.as_slice().try_into().map(u32::from_be_bytes).unwrap_or(u32::MAX);
                if found > HISTORY_SCHEMA {
                    return Err(StoreError::Schema { path: location.into(), found, supported: HISTORY_SCHEMA }.into());
                }
            }
        }
        Ok(SampleHistory { tree: store.tree("history")?, per_vm: per_vm.max(1), counts: Mutex::new(HashMap::new()) })
    }

    /// Appends one sample per VM taken at `at_ms`, then drops each VM's oldest samples beyond the
    /// bound. All inserts of one call land atomically.
    pub fn record(&self, at_ms: u64, samples: &[VmSample]) -> Result<(), HistoryError> {
        let mut ops = Vec::with_capacity(samples.len());
        for s in samples {
            if s.vm_id.is_empty() || s.vm_id.contains('\0') {
                return Err(HistoryError::BadVmId(s.vm_id.clone()));
            }
            let mut value = Vec::with_capacity(1 + s.encoded_len());
            value.push(RECORD_FORMAT);
            s.encode(&mut value).expect("Vec grows as needed");
            ops.push(BatchOp::Insert(vm_key(&s.vm_id, at_ms), value));
        }
        self.tree.apply(ops)?;
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        for s in samples {
            let count = match counts.get_mut(&s.vm_id) {
                Some(c) => {
                    *c += 1;
                    *c
                }
                None => {
                    // First time this run: count what is stored (includes the insert above).
                    let c = self.tree.count_prefix(&vm_prefix(&s.vm_id))?;
                    counts.insert(s.vm_id.clone(), c);
                    c
                }
            };
            if count > self.per_vm {
                let excess = count - self.per_vm;
                let old = self.tree.scan_prefix(&vm_prefix(&s.vm_id), Order::Ascending, excess)?;
                let removed = old.len();
                self.tree.apply(old.into_iter().map(|(k, _)| BatchOp::Remove(k)).collect())?;
                if let Some(c) = counts.get_mut(&s.vm_id) {
                    *c -= removed;
                }
            }
        }
        Ok(())
    }

    /// The last `n` samples of `vm`, oldest first, with their times.
    pub fn recent(&self, vm: &str, n: usize) -> Result<Vec<(u64, VmSample)>, HistoryError> {
        let mut rows = self.tree.scan_prefix(&vm_prefix(vm), Order::Descending, n)?;
        rows.reverse();
        rows.into_iter()
            .map(|(k, v)| {
                let corrupt = |detail: String| HistoryError::Corrupt { key: describe(&k), detail };
                let at = k[k.len().saturating_sub(8)..].try_into().map(u64::from_be_bytes).map_err(|_| corrupt("key too short".into()))?;
                match v.split_first() {
                    Some((&RECORD_FORMAT, body)) => VmSample::decode(body).map(|s| (at, s)).map_err(|e| corrupt(e.to_string())),
                    Some((f, _)) => Err(corrupt(format!("unknown record format {f}"))),
                    None => Err(corrupt("empty value".into())),
                }
            })
            .collect()
    }

    /// How many samples are stored for `vm`.
    pub fn len(&self, vm: &str) -> Result<usize, HistoryError> {
        Ok(self.tree.count_prefix(&vm_prefix(vm))?)
    }

    pub fn per_vm_limit(&self) -> usize {
        self.per_vm
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, SledStore};

    fn sample(vm: &str, cpu: f64) -> VmSample {
        VmSample { vm_id: vm.into(), cpu_utilisation: cpu, ..Default::default() }
    }

    #[test]
    fn keeps_the_newest_samples_up_to_the_bound() {
        let store = MemoryStore::new();
        let h = SampleHistory::open(&store, 3, Path::new("mem")).unwrap();
        for t in 0..5u64 {
            h.record(1000 + t, &[sample("a", t as f64 / 10.0), sample("b", 0.5)]).unwrap();
        }
        let a = h.recent("a", 10).unwrap();
        assert_eq!(a.iter().map(|(t, _)| *t).collect::<Vec<_>>(), vec![1002, 1003, 1004]);
        assert_eq!(a[2].1.cpu_utilisation, 0.4);
        assert_eq!(h.len("b").unwrap(), 3);
        assert_eq!(h.recent("a", 1).unwrap()[0].0, 1004);
    }

    #[test]
    fn survives_reopen_and_keeps_bounding_across_restarts() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(d.path()).unwrap();
            let h = SampleHistory::open(&s, 4, d.path()).unwrap();
            for t in 0..3 {
                h.record(t, &[sample("vm", t as f64)]).unwrap();
            }
            s.flush().unwrap();
        }
        let s = SledStore::open(d.path()).unwrap();
        let h = SampleHistory::open(&s, 4, d.path()).unwrap();
        assert_eq!(h.len("vm").unwrap(), 3);
        for t in 3..6 {
            h.record(t, &[sample("vm", t as f64)]).unwrap();
        }
        let times: Vec<u64> = h.recent("vm", 100).unwrap().into_iter().map(|(t, _)| t).collect();
        assert_eq!(times, vec![2, 3, 4, 5]);
    }

    #[test]
    fn newer_schema_and_bad_ids_are_refused_without_loss() {
        let store = MemoryStore::new();
        store.tree("meta").unwrap().insert(b"history_schema", &99u32.to_be_bytes()).unwrap();
        store.tree("history").unwrap().insert(b"x\0\0\0\0\0\0\0\0\x01", b"keep").unwrap();
        assert!(matches!(SampleHistory::open(&store, 3, Path::new("s")), Err(HistoryError::Store(StoreError::Schema { found: 99, .. }))));
        assert_eq!(store.tree("history").unwrap().get(b"x\0\0\0\0\0\0\0\0\x01").unwrap(), Some(b"keep".to_vec()));
        let fresh = MemoryStore::new();
        let h = SampleHistory::open(&fresh, 3, Path::new("s")).unwrap();
        assert!(matches!(h.record(1, &[sample("a\0b", 0.1)]), Err(HistoryError::BadVmId(_))));
    }

    #[test]
    fn a_corrupt_record_is_reported_by_key() {
        let store = MemoryStore::new();
        let h = SampleHistory::open(&store, 3, Path::new("s")).unwrap();
        h.record(7, &[sample("vm", 0.2)]).unwrap();
        store.tree("history").unwrap().insert(&vm_key("vm", 7), &[RECORD_FORMAT, 0xff, 0xff]).unwrap();
        let err = h.recent("vm", 5).unwrap_err().to_string();
        assert!(err.contains("vm@"), "{err}");
    }
}
