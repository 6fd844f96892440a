//! The steps this agent has taken for the coordinator, by the step id a command carries (tree
//! `steps`): a migration's copy, hand-over or completion is run at most once, whoever asks again
//! — a new leader after a failover, the same one after a reconnect. A step is written as started
//! (and flushed) before it runs and as done, with its result, before the result is sent: asked
//! again, a done step's result is sent again without running it; a step started but never
//! finished (the agent died in it) is not run again — its outcome is for the coordinator to find
//! out by asking where the VM is. Entries older than a week go when the agent starts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use presage_protocol::pb::CommandResult;
use prost::Message;

use crate::store::{KvStore, KvTree, Order, StoreError};

pub const TREE: &str = "steps";
/// How long a step is remembered.
const RETAIN_MS: u64 = 7 * 24 * 3600 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("step {id}: its record in the store is unreadable ({detail}); not run, record left in place")]
    Corrupt { id: String, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether a step may run.
#[derive(Debug, PartialEq)]
pub enum Admission {
    /// Never seen: recorded as started, run it.
    Run,
    /// Done before: its result (to send again, not to run again).
    Done(CommandResult),
    /// Started before and never finished (the agent stopped in it): not run again.
    StartedBefore { at_ms: u64 },
}

pub struct StepLedger {
    store: Arc<dyn KvStore>,
    tree: Arc<dyn KvTree>,
    /// Serialises check-and-record.
    writing: Mutex<()>,
    counts: StepCounts,
}

/// How the steps asked of this process were admitted (since it started).
#[derive(Debug, Default)]
pub struct StepCounts {
    /// Run (first asked).
    pub run: AtomicU64,
    /// Asked again once done: answered from the ledger, not run.
    pub answered_again: AtomicU64,
    /// Asked again while started and unfinished (the agent stopped in it): refused, not run.
    pub refused_unfinished: AtomicU64,
}

impl StepCounts {
    /// `(admission, count)` for each kind, in a fixed order.
    pub fn snapshot(&self) -> [(&'static str, u64); 3] {
        [
            ("run", self.run.load(Ordering::Relaxed)),
            ("answered_again", self.answered_again.load(Ordering::Relaxed)),
            ("refused_unfinished", self.refused_unfinished.load(Ordering::Relaxed)),
        ]
    }
}

impl StepLedger {
    /// Opens the ledger in `store`, forgetting steps older than a week (as of `now_ms`).
    pub fn open(store: Arc<dyn KvStore>, now_ms: u64) -> Result<StepLedger, StoreError> {
        let tree = store.tree(TREE)?;
        let old: Vec<Vec<u8>> = tree
            .scan_prefix(b"", Order::Ascending, usize::MAX)?
            .into_iter()
            .filter(|(_, v)| decode_at(v).is_some_and(|at| at + RETAIN_MS < now_ms))
            .map(|(k, _)| k)
            .collect();
        if !old.is_empty() {
            tree.apply(old.into_iter().map(crate::store::BatchOp::Remove).collect())?;
            store.flush()?;
        }
        Ok(StepLedger { store, tree, writing: Mutex::new(()), counts: StepCounts::default() })
    }

    /// How steps were admitted since this ledger was opened.
    pub fn counts(&self) -> &StepCounts {
        &self.counts
    }

    /// Admits step `id` at `now_ms`: recorded as started (flushed) when it may run.
    pub fn begin(&self, id: &str, now_ms: u64) -> Result<Admission, LedgerError> {
        let _g = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = self.tree.get(id.as_bytes())? {
            let corrupt = |detail: &str| LedgerError::Corrupt { id: id.into(), detail: detail.into() };
            let at_ms = decode_at(&v).ok_or_else(|| corrupt("shorter than its header"))?;
            let admission = match v[0] {
                b'S' => Admission::StartedBefore { at_ms },
                b'D' => CommandResult::decode(&v[9..]).map(Admission::Done).map_err(|e| corrupt(&e.to_string()))?,
                other => return Err(corrupt(&format!("unknown state byte {other}"))),
            };
            let counter = if v[0] == b'S' { &self.counts.refused_unfinished } else { &self.counts.answered_again };
            counter.fetch_add(1, Ordering::Relaxed);
            return Ok(admission);
        }
        self.tree.insert(id.as_bytes(), &encode(b'S', now_ms, &[]))?;
        self.store.flush()?;
        self.counts.run.fetch_add(1, Ordering::Relaxed);
        Ok(Admission::Run)
    }

    /// Records step `id` as done with `result` (flushed before it returns).
    pub fn finish(&self, id: &str, result: &CommandResult, now_ms: u64) -> Result<(), StoreError> {
        let _g = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        self.tree.insert(id.as_bytes(), &encode(b'D', now_ms, &result.encode_to_vec()))?;
        self.store.flush()
    }
}

fn encode(state: u8, at_ms: u64, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + body.len());
    v.push(state);
    v.extend_from_slice(&at_ms.to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn decode_at(v: &[u8]) -> Option<u64> {
    v.get(1..9).map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;
    use presage_protocol::pb::CommandStatus;

    #[test]
    fn a_step_runs_once_its_result_is_kept_across_restarts_and_an_unfinished_one_is_not_run_again() {
        let dir = tempfile::tempdir().unwrap();
        let open = || StepLedger::open(Arc::new(SledStore::open(&dir.path().join("s")).unwrap()), 1_000).unwrap();
        let result = CommandResult { id: 7, status: CommandStatus::Ok as i32, message: "migrated".into(), detail: None };
        {
            let ledger = open();
            assert_eq!(ledger.begin("plan-1/move-0/migrate_out", 1_000).unwrap(), Admission::Run);
            ledger.finish("plan-1/move-0/migrate_out", &result, 2_000).unwrap();
            assert_eq!(ledger.begin("plan-1/move-0/migrate_out", 3_000).unwrap(), Admission::Done(result.clone()));
            // Started, then the agent dies before it finishes.
            assert_eq!(ledger.begin("plan-1/move-1/migrate_out", 4_000).unwrap(), Admission::Run);
        }
        let ledger = open();
        assert_eq!(ledger.begin("plan-1/move-0/migrate_out", 5_000).unwrap(), Admission::Done(result.clone()));
        assert_eq!(ledger.begin("plan-1/move-1/migrate_out", 5_000).unwrap(), Admission::StartedBefore { at_ms: 4_000 });
        assert_eq!(ledger.begin("plan-1/move-0/migrate_out", 6_000).unwrap(), Admission::Done(result.clone()));
        // Counted since this opening: nothing run, asked twice when done, once when unfinished.
        assert_eq!(ledger.counts().snapshot(), [("run", 0), ("answered_again", 2), ("refused_unfinished", 1)]);
        drop(ledger);
        // A week later they are forgotten.
        let later = StepLedger::open(Arc::new(SledStore::open(&dir.path().join("s")).unwrap()), 5_000 + RETAIN_MS).unwrap();
        assert_eq!(later.begin("plan-1/move-0/migrate_out", 5_000 + RETAIN_MS).unwrap(), Admission::Run);
    }

    #[test]
    fn an_unreadable_record_is_an_error_naming_the_step_and_is_left_in_place() {
        let store: Arc<dyn KvStore> = Arc::new(crate::store::MemoryStore::default());
        store.tree(TREE).unwrap().insert(b"s1", b"D").unwrap();
        let ledger = StepLedger::open(store.clone(), 0).unwrap();
        let e = ledger.begin("s1", 0).unwrap_err();
        assert!(e.to_string().contains("step s1") && e.to_string().contains("unreadable"), "{e}");
        assert_eq!(store.tree(TREE).unwrap().get(b"s1").unwrap().as_deref(), Some(&b"D"[..]));
    }
}
