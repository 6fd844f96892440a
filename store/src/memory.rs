//! An in-memory [`KvStore`]: no durability, same semantics as the durable backends.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::{BatchOp, KvStore, KvTree, Order, StoreError};

#[derive(Default)]
pub struct MemoryStore {
    trees: Mutex<HashMap<String, Arc<MemoryTree>>>,
}

#[derive(Default)]
struct MemoryTree {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl KvStore for MemoryStore {
    fn tree(&self, name: &str) -> Result<Arc<dyn KvTree>, StoreError> {
        let mut trees = self.trees.lock().unwrap_or_else(|p| p.into_inner());
        Ok(trees.entry(name.to_string()).or_default().clone())
    }
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl MemoryTree {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl KvTree for MemoryTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map().get(key).cloned())
    }
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.map().insert(key.to_vec(), value.to_vec());
        Ok(())
    }
    fn remove(&self, key: &[u8]) -> Result<(), StoreError> {
        self.map().remove(key);
        Ok(())
    }
    fn apply(&self, ops: Vec<BatchOp>) -> Result<(), StoreError> {
        let mut m = self.map();
        for op in ops {
            match op {
                BatchOp::Insert(k, v) => {
                    m.insert(k, v);
                }
                BatchOp::Remove(k) => {
                    m.remove(&k);
                }
            }
        }
        Ok(())
    }
    fn scan_prefix(&self, prefix: &[u8], order: Order, limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        Ok(scan_map(&self.map(), prefix, order, limit, 0))
    }
    fn count_prefix(&self, prefix: &[u8]) -> Result<usize, StoreError> {
        Ok(self.map().range(prefix.to_vec()..).take_while(|(k, _)| k.starts_with(prefix)).count())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passes_the_store_conformance_suite() {
        crate::conformance::run_all(&|_| Box::new(super::MemoryStore::new()), false);
    }
}

/// Up to `limit` entries of `map` whose key starts with `prefix`, in `order`, each key without
/// its first `strip` bytes (a tree's own prefix in a map shared by trees).
pub(crate) fn scan_map(
    map: &BTreeMap<Vec<u8>, Vec<u8>>,
    prefix: &[u8],
    order: Order,
    limit: usize,
    strip: usize,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let matching = map.range(prefix.to_vec()..).take_while(|(k, _)| k.starts_with(prefix));
    let pick = |(k, v): (&Vec<u8>, &Vec<u8>)| (k[strip..].to_vec(), v.clone());
    match order {
        Order::Ascending => matching.take(limit).map(pick).collect(),
        Order::Descending => {
            let all: Vec<_> = matching.collect();
            all.into_iter().rev().take(limit).map(pick).collect()
        }
    }
}
