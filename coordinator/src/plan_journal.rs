//! The coordinator's durable record of the plans it executes, and of the hosts operators drain.
//!
//! Every plan the executor runs (a policy pass's moves, an operator's move, a rollback) is a
//! [`PlanRecord`]; each move's step is written, and flushed, *before* the step is taken
//! (reserving, migrating, handed over, completing), and its outcome after. A coordinator that
//! restarts mid-plan finds the moves that were in a step and resolves each one by asking both
//! hosts where the VM is (see `executor::recover`): no move is left half-done and no VM is
//! lost or left running twice. The journal lives in a [`KvStore`] (sled in the daemon) under
//! the trees `plans` and `drained`.

use std::collections::HashSet;
use std::sync::Arc;

use presage_store::{BatchOp, KvStore, KvTree, Order, StoreError};
use serde::{Deserialize, Serialize};

const PLANS_TREE: &str = "plans";
const DRAINED_TREE: &str = "drained";
const PLAN_PREFIX: &[u8] = b"plan/";
/// Index of the plans with a move not in a final step (kept in the same tree, written in the
/// same atomic batch as the plan), so a restart or a reconciler tick reads only those.
const OPEN_PREFIX: &[u8] = b"open/";
/// Finished plans older than the newest this many are forgotten as new ones are recorded.
pub const RETAINED_PLANS: u64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("plan journal: {0}")]
    Store(#[from] StoreError),
    #[error("plan journal entry {key} is damaged ({detail}); it was left in place")]
    Damaged { key: String, detail: String },
}

/// Where a move stands. A move is written in a step before the step is taken, so after a crash
/// a non-final step means "this may or may not have happened yet": recovery asks the hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Not started.
    Pending,
    /// Asking the destination for a hard reservation.
    Reserving,
    /// The source is migrating the VM (copy in progress).
    Migrating,
    /// Copied: the destination is taking the VM over (simulated hand-over).
    HandingOver,
    /// The destination runs it; the source is letting go.
    Completing,
    /// It runs on the destination and no longer on the source; the reservation is released.
    Done,
    /// The destination refused the reservation; nothing moved.
    Refused,
    /// A pre-check failed (not running on the source, destination unreachable or CPU
    /// incompatible, ...); nothing was started.
    Skipped,
    /// The migration failed; the VM stayed on its source.
    Failed,
    /// Over its time budget (or interrupted by a restart): aborted; the VM stayed on its source.
    Aborted,
    /// The destination did not take the VM; it resumed on its source.
    RolledBack,
    /// Not started because the plan stopped (an earlier move failed and the plan rolls back).
    Cancelled,
}

impl Step {
    pub fn is_final(self) -> bool {
        !matches!(self, Step::Pending | Step::Reserving | Step::Migrating | Step::HandingOver | Step::Completing)
    }

    /// The move failed after it started (as opposed to being declined before it did).
    pub fn is_failure(self) -> bool {
        matches!(self, Step::Failed | Step::Aborted | Step::RolledBack)
    }

    pub fn name(self) -> &'static str {
        match self {
            Step::Pending => "pending",
            Step::Reserving => "reserving",
            Step::Migrating => "migrating",
            Step::HandingOver => "handing_over",
            Step::Completing => "completing",
            Step::Done => "done",
            Step::Refused => "refused",
            Step::Skipped => "skipped",
            Step::Failed => "failed",
            Step::Aborted => "aborted",
            Step::RolledBack => "rolled_back",
            Step::Cancelled => "cancelled",
        }
    }
}

/// One move of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MoveRecord {
    pub vm_id: String,
    pub from_host: String,
    pub to_host: String,
    /// Why the plan moves it (`overload`, `underload`, `drain`, `operator`, `rollback`).
    pub reason: String,
    /// What the destination reserves for it.
    pub cpu_mhz: f64,
    pub memory_mib: f64,
    pub step: Step,
    #[serde(default)]
    pub detail: String,
    /// How long the move took, start to outcome (milliseconds), once it has an outcome.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// The other VMs of its bundle (a required dependency binds them to one host), which move
    /// to the same destination: the destination holds all their reservations before any of
    /// them starts, or none moves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub with: Vec<String>,
}

impl MoveRecord {
    pub fn new(vm_id: &str, from_host: &str, to_host: &str, reason: &str, cpu_mhz: f64, memory_mib: f64) -> MoveRecord {
        MoveRecord {
            vm_id: vm_id.into(),
            from_host: from_host.into(),
            to_host: to_host.into(),
            reason: reason.into(),
            cpu_mhz,
            memory_mib,
            step: Step::Pending,
            detail: String::new(),
            duration_ms: None,
            with: Vec::new(),
        }
    }

    /// The id of the hard reservation this move holds on its destination.
    pub fn reservation_id(&self, plan_id: u64) -> String {
        format!("plan-{plan_id}/{}", self.vm_id)
    }
}

/// A plan: moves executed together, in order, within the executor's limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanRecord {
    pub id: u64,
    /// `policy`, `operator`, or `rollback` (then `rollback_of` names the plan).
    pub origin: String,
    /// Wall-clock creation time (Unix milliseconds).
    pub created_ms: u64,
    pub moves: Vec<MoveRecord>,
    #[serde(default)]
    pub rollback_of: Option<u64>,
    /// The plan that reversed this one.
    #[serde(default)]
    pub rolled_back_by: Option<u64>,
}

impl PlanRecord {
    /// `running` while a move is unfinished; then `done` (every move done), `rolled_back`,
    /// `partial` (some done, some not) or `failed` (none done).
    pub fn status(&self) -> &'static str {
        if self.moves.iter().any(|m| !m.step.is_final()) {
            "running"
        } else if self.rolled_back_by.is_some() {
            "rolled_back"
        } else if self.moves.iter().all(|m| m.step == Step::Done) {
            "done"
        } else if self.moves.iter().any(|m| m.step == Step::Done) {
            "partial"
        } else {
            "failed"
        }
    }

    /// The moves that would undo this plan's done moves, last first.
    pub fn reversed(&self) -> Vec<MoveRecord> {
        self.moves
            .iter()
            .rev()
            .filter(|m| m.step == Step::Done)
            .map(|m| MoveRecord::new(&m.vm_id, &m.to_host, &m.from_host, "rollback", m.cpu_mhz, m.memory_mib))
            .collect()
    }
}

/// The journal: plans by id, and the drained hosts.
pub struct PlanJournal {
    store: Arc<dyn KvStore>,
    plans: Arc<dyn KvTree>,
    drained: Arc<dyn KvTree>,
    next_id: std::sync::atomic::AtomicU64,
}

fn plan_key(id: u64) -> Vec<u8> {
    key(PLAN_PREFIX, id)
}

fn open_key(id: u64) -> Vec<u8> {
    key(OPEN_PREFIX, id)
}

use crate::journal_keys::numbered_key as key;

impl PlanJournal {
    /// Opens the journal in `store`; plan ids continue after the highest one found.
    pub fn open(store: Arc<dyn KvStore>) -> Result<PlanJournal, JournalError> {
        let plans = store.tree(PLANS_TREE)?;
        let drained = store.tree(DRAINED_TREE)?;
        let last = plans.scan_prefix(PLAN_PREFIX, Order::Descending, 1)?;
        let next = match last.first() {
            Some((k, _)) => {
                let text = String::from_utf8_lossy(&k[PLAN_PREFIX.len()..]).into_owned();
                text.parse::<u64>().map_err(|e| JournalError::Damaged { key: String::from_utf8_lossy(k).into(), detail: e.to_string() })?
                    + 1
            }
            None => 1,
        };
        Ok(PlanJournal { store, plans, drained, next_id: next.into() })
    }

    /// Records a new plan (every move pending) and returns it.
    pub fn create(
        &self,
        origin: &str,
        moves: Vec<MoveRecord>,
        created_ms: u64,
        rollback_of: Option<u64>,
    ) -> Result<PlanRecord, JournalError> {
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let plan = PlanRecord { id, origin: origin.into(), created_ms, moves, rollback_of, rolled_back_by: None };
        self.save(&plan)?;
        // Retention: the plan RETAINED_PLANS before this one goes, if it has finished.
        if let Some(old) = id.checked_sub(RETAINED_PLANS)
            && let Ok(Some(p)) = self.get(old)
            && p.status() != "running"
        {
            self.plans.apply(vec![BatchOp::Remove(plan_key(old)), BatchOp::Remove(open_key(old))])?;
        }
        Ok(plan)
    }

    /// Writes `plan` durably (flushed before it returns), with its entry in the index of open
    /// plans in the same atomic batch.
    pub fn save(&self, plan: &PlanRecord) -> Result<(), JournalError> {
        let value = serde_json::to_vec(plan).map_err(|e| JournalError::Store(StoreError::Io(e.to_string())))?;
        let index =
            if plan.status() == "running" { BatchOp::Insert(open_key(plan.id), Vec::new()) } else { BatchOp::Remove(open_key(plan.id)) };
        self.plans.apply(vec![BatchOp::Insert(plan_key(plan.id), value), index])?;
        self.store.flush()?;
        Ok(())
    }

    pub fn get(&self, id: u64) -> Result<Option<PlanRecord>, JournalError> {
        match self.plans.get(&plan_key(id))? {
            Some(v) => decode(&plan_key(id), &v).map(Some),
            None => Ok(None),
        }
    }

    /// The `limit` newest plans, newest first. A damaged entry is skipped with a warning.
    pub fn recent(&self, limit: usize) -> Result<Vec<PlanRecord>, JournalError> {
        let mut out = Vec::new();
        for (k, v) in self.plans.scan_prefix(PLAN_PREFIX, Order::Descending, limit)? {
            match decode(&k, &v) {
                Ok(p) => out.push(p),
                Err(e) => tracing::warn!(error = %e, "skipping a damaged plan"),
            }
        }
        Ok(out)
    }

    /// Plans with a move not in a final step: what a restarted coordinator must resolve.
    /// Reads only the index of open plans, not the whole journal.
    pub fn unfinished(&self) -> Result<Vec<PlanRecord>, JournalError> {
        let mut out = Vec::new();
        for (k, _) in self.plans.scan_prefix(OPEN_PREFIX, Order::Ascending, usize::MAX)? {
            let key = String::from_utf8_lossy(&k).into_owned();
            let Ok(id) = key[OPEN_PREFIX.len()..].parse::<u64>() else {
                tracing::warn!(%key, "skipping a damaged index entry");
                continue;
            };
            match self.get(id) {
                Ok(Some(p)) if p.status() == "running" => out.push(p),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "skipping a damaged plan"),
            }
        }
        Ok(out)
    }

    /// The hosts marked drained.
    pub fn drained(&self) -> Result<HashSet<String>, JournalError> {
        Ok(self
            .drained
            .scan_prefix(b"", Order::Ascending, usize::MAX)?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
            .collect())
    }

    /// Marks `host` drained or not, durably.
    pub fn set_drained(&self, host: &str, drained: bool) -> Result<(), JournalError> {
        if drained {
            self.drained.insert(host.as_bytes(), b"")?;
        } else {
            self.drained.remove(host.as_bytes())?;
        }
        self.store.flush()?;
        Ok(())
    }
}

fn decode(key: &[u8], value: &[u8]) -> Result<PlanRecord, JournalError> {
    crate::journal_keys::decode(key, value).map_err(|d| JournalError::Damaged { key: d.key, detail: d.detail })
}

#[cfg(test)]
mod tests {
    use super::*;
    use presage_store::{MemoryStore, SledStore};

    fn mv(vm: &str, from: &str, to: &str, step: Step) -> MoveRecord {
        MoveRecord { step, ..MoveRecord::new(vm, from, to, "overload", 100.0, 512.0) }
    }

    #[test]
    fn plans_and_drain_marks_survive_a_reopen_and_ids_continue() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store: Arc<dyn KvStore> = Arc::new(SledStore::open(dir.path()).unwrap());
            let j = PlanJournal::open(store).unwrap();
            let mut p = j.create("policy", vec![mv("v1", "a", "b", Step::Pending)], 1, None).unwrap();
            assert_eq!(p.id, 1);
            p.moves[0].step = Step::Migrating;
            j.save(&p).unwrap();
            j.create("operator", vec![mv("v2", "a", "c", Step::Done)], 2, None).unwrap();
            j.set_drained("a", true).unwrap();
            j.set_drained("b", true).unwrap();
            j.set_drained("b", false).unwrap();
        }
        let store: Arc<dyn KvStore> = Arc::new(SledStore::open(dir.path()).unwrap());
        let j = PlanJournal::open(store).unwrap();
        assert_eq!(j.drained().unwrap(), HashSet::from(["a".to_string()]));
        let unfinished = j.unfinished().unwrap();
        assert_eq!(unfinished.len(), 1, "the plan with a move mid-migration");
        assert_eq!(unfinished[0].moves[0].step, Step::Migrating);
        assert_eq!(j.create("policy", vec![], 3, None).unwrap().id, 3, "ids continue after a reopen");
        assert_eq!(j.recent(10).unwrap().iter().map(|p| p.id).collect::<Vec<_>>(), vec![3, 2, 1]);
    }

    #[test]
    fn only_open_plans_are_read_back_and_old_finished_ones_are_forgotten() {
        let store = Arc::new(MemoryStore::new());
        let j = PlanJournal::open(store.clone()).unwrap();
        let open = j.create("policy", vec![mv("v0", "a", "b", Step::Migrating)], 0, None).unwrap();
        for i in 1..=RETAINED_PLANS + 5 {
            j.create("policy", vec![mv(&format!("v{i}"), "a", "b", Step::Done)], i, None).unwrap();
        }
        let tree = store.tree(PLANS_TREE).unwrap();
        assert_eq!(tree.count_prefix(OPEN_PREFIX).unwrap(), 1, "only the plan mid-step is indexed");
        assert_eq!(j.unfinished().unwrap().iter().map(|p| p.id).collect::<Vec<_>>(), vec![open.id]);
        assert!(j.get(open.id).unwrap().is_some(), "an unfinished plan is never forgotten");
        assert!(j.get(2).unwrap().is_none() && j.get(6).unwrap().is_none(), "old finished plans are forgotten");
        assert!(j.get(7).unwrap().is_some());
        assert_eq!(tree.count_prefix(PLAN_PREFIX).unwrap() as u64, RETAINED_PLANS + 1);
        // Finishing the open plan takes it out of the index.
        let mut p = j.get(open.id).unwrap().unwrap();
        p.moves[0].step = Step::Aborted;
        j.save(&p).unwrap();
        assert!(j.unfinished().unwrap().is_empty());
    }

    #[test]
    fn a_damaged_plan_is_named_and_left_in_place() {
        let store = Arc::new(MemoryStore::new());
        let j = PlanJournal::open(store.clone()).unwrap();
        j.create("policy", vec![mv("v1", "a", "b", Step::Done)], 1, None).unwrap();
        store.tree(PLANS_TREE).unwrap().insert(&plan_key(2), b"{not json").unwrap();
        let e = j.get(2).unwrap_err().to_string();
        assert!(e.contains("plan/00000000000000000002") && e.contains("damaged"), "{e}");
        assert_eq!(j.recent(10).unwrap().len(), 1, "the good plan is still listed");
        assert!(store.tree(PLANS_TREE).unwrap().get(&plan_key(2)).unwrap().is_some(), "nothing deleted");
    }

    #[test]
    fn status_and_reversal() {
        let mut p = PlanRecord {
            id: 4,
            origin: "policy".into(),
            created_ms: 0,
            moves: vec![mv("v1", "a", "b", Step::Done), mv("v2", "a", "c", Step::Failed), mv("v3", "c", "d", Step::Done)],
            rollback_of: None,
            rolled_back_by: None,
        };
        assert_eq!(p.status(), "partial");
        let back = p.reversed();
        assert_eq!(
            back.iter().map(|m| (m.vm_id.as_str(), m.from_host.as_str(), m.to_host.as_str())).collect::<Vec<_>>(),
            vec![("v3", "d", "c"), ("v1", "b", "a")],
            "done moves only, last first, each from its destination back to its source"
        );
        p.moves[1].step = Step::Migrating;
        assert_eq!(p.status(), "running");
        p.moves[1].step = Step::Done;
        assert_eq!(p.status(), "done");
        p.rolled_back_by = Some(5);
        assert_eq!(p.status(), "rolled_back");
    }
}
