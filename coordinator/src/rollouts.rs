//! Staged rollouts of configuration plans (an optimiser's result, an operator's plan: resizes
//! and moves): a canary of the plan's VMs first, watched against the VMs still waiting (the control group), then the
//! rest, or every applied change put back when the canary does worse beyond noise. The decision
//! logic is the decision core's ([`presage_decide::rollout`]); this module journals it and takes
//! its steps.
//!
//! Every rollout is a [`RolloutRecord`] in the coordinator's store (tree `rollouts`), written
//! and flushed before each step is taken: a restarted coordinator reads the open ones and takes
//! the step the record says (re-applying a stage resizes to the same configuration again,
//! which changes nothing), so a rollout is resumed or rolled back, never left half done. Each
//! resize goes through the resize path ([`crate::sizing_ops::resize_versioned`]) and is a
//! configuration version naming the rollout; each stage's moves are one plan of the migration
//! executor ([`crate::applier`]), journaled in the plan journal, whose reconciler settles a move
//! a restart interrupts; a stage re-applied moves only the VMs not yet where they should be.
//!
//! The figures judged, per VM, as the change from before the rollout to during the watch
//! (larger is worse): `cpu_saturation` (the share of samples using at least 97 % of the CPU it
//! is given: a VM held at its quota wants more), `memory_pressure` (the share of samples with
//! at least 97 % of its memory in use), and where the VM's guest reports its applications
//! (presage-guest), `app_latency` (the mean of its worst p99 over the declared SLO: 0.01 is a
//! hundredth of the SLO) and `app_throughput_drop` (the relative drop of the requests it
//! completes per second, as ln(before / during)). A canary judged worse on any of them beyond
//! noise is rolled back; the control group's change takes out what moved every VM alike (the
//! offered load, the time of day).

use std::collections::BTreeMap;
use std::sync::Arc;

use presage_decide::rollout::{Action, FigureChanges, JudgeConfig, PlannedVm, Rollout, Verdict, judge};
use presage_store::{BatchOp, KvStore, KvTree, Order, StoreError};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::config_versions::VmConfig;
use crate::shared::Shared;
use crate::sizing_ops::{Proposal, resize_versioned};

const TREE: &str = "rollouts";
const RECORD_PREFIX: &[u8] = b"rollout/";
const OPEN_PREFIX: &[u8] = b"open/";
/// A sample using at least this share of what the VM is given counts as saturated.
const SATURATED: f64 = 0.97;
/// The figures judged.
pub const FIGURES: [&str; 4] = ["cpu_saturation", "memory_pressure", "app_latency", "app_throughput_drop"];

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("rollouts: {0}")]
    Store(#[from] StoreError),
    #[error("rollout {key} is damaged ({detail}); it was left in place")]
    Damaged { key: String, detail: String },
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    #[error("no rollout {0}")]
    Unknown(u64),
    #[error("changes: no host reports a VM {0:?}")]
    UnknownVm(String),
    #[error("changes: VM {vm}: no host {host:?} has registered")]
    UnknownHost { vm: String, host: String },
}

/// One VM's change in a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlannedChange {
    pub vm: String,
    pub to: VmConfig,
    /// What it had when the rollout was made (what a rollback puts back).
    pub from: VmConfig,
    pub reason: String,
    #[serde(default)]
    pub predicted_gain: BTreeMap<String, f64>,
    /// Where it ran when the rollout was made, and where the plan moves it (none: it stays).
    #[serde(default)]
    pub from_host: String,
    #[serde(default)]
    pub to_host: Option<String>,
}

/// One VM's change as a plan gives it: the VM, its new configuration, where it moves (if it
/// does), why, and the gain predicted.
pub struct Change {
    pub vm: String,
    pub to: VmConfig,
    pub to_host: Option<String>,
    pub reason: String,
    pub predicted_gain: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub at_ms: u64,
    pub what: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutRecord {
    pub id: u64,
    pub created_ms: u64,
    pub proposed_by: String,
    pub changes: Vec<PlannedChange>,
    pub rollout: Rollout,
    pub judge: JudgeConfig,
    /// Each VM's figures before the rollout.
    pub baseline: BTreeMap<String, BTreeMap<String, f64>>,
    pub verdicts: Vec<Verdict>,
    pub log: Vec<LogEntry>,
    /// Attempts at putting the applied changes back (a refused one is tried again each tick,
    /// up to [`MAX_REVERT_ATTEMPTS`]).
    #[serde(default)]
    pub revert_attempts: u32,
}

/// Attempts at putting a rollout's changes back before it ends with those left said so.
pub const MAX_REVERT_ATTEMPTS: u32 = 10;

impl RolloutRecord {
    pub fn finished(&self) -> bool {
        matches!(self.rollout.next(u64::MAX), Action::Finished)
    }

    fn note(&mut self, at_ms: u64, what: String) {
        info!(rollout = self.id, "{what}");
        self.log.push(LogEntry { at_ms, what });
    }

    fn change(&self, vm: &str) -> Option<&PlannedChange> {
        self.changes.iter().find(|c| c.vm == vm)
    }
}

pub struct RolloutJournal {
    store: Arc<dyn KvStore>,
    tree: Arc<dyn KvTree>,
    next_id: std::sync::atomic::AtomicU64,
}

use crate::journal_keys::numbered_key as key;

fn decode(k: &[u8], v: &[u8]) -> Result<RolloutRecord, RolloutError> {
    crate::journal_keys::decode(k, v).map_err(|d| RolloutError::Damaged { key: d.key, detail: d.detail })
}

impl RolloutJournal {
    pub fn open(store: Arc<dyn KvStore>) -> Result<RolloutJournal, RolloutError> {
        let tree = store.tree(TREE)?;
        let next = match tree.scan_prefix(RECORD_PREFIX, Order::Descending, 1)?.first() {
            Some((k, v)) => decode(k, v)?.id + 1,
            None => 1,
        };
        Ok(RolloutJournal { store, tree, next_id: next.into() })
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes the record (and its place in the index of open rollouts) durably.
    pub fn save(&self, r: &RolloutRecord) -> Result<(), RolloutError> {
        let value = serde_json::to_vec(r).map_err(|e| RolloutError::Store(StoreError::Io(e.to_string())))?;
        let index =
            if r.finished() { BatchOp::Remove(key(OPEN_PREFIX, r.id)) } else { BatchOp::Insert(key(OPEN_PREFIX, r.id), Vec::new()) };
        self.tree.apply(vec![BatchOp::Insert(key(RECORD_PREFIX, r.id), value), index])?;
        self.store.flush()?;
        Ok(())
    }

    pub fn get(&self, id: u64) -> Result<RolloutRecord, RolloutError> {
        match self.tree.get(&key(RECORD_PREFIX, id))? {
            Some(v) => decode(&key(RECORD_PREFIX, id), &v),
            None => Err(RolloutError::Unknown(id)),
        }
    }

    /// The newest `limit` rollouts, newest first.
    pub fn recent(&self, limit: usize) -> Result<Vec<RolloutRecord>, RolloutError> {
        let mut out = Vec::new();
        for (k, v) in self.tree.scan_prefix(RECORD_PREFIX, Order::Descending, limit)? {
            match decode(&k, &v) {
                Ok(r) => out.push(r),
                Err(e) => warn!(error = %e, "skipping a damaged rollout"),
            }
        }
        Ok(out)
    }

    /// How many rollouts are open (their index only; nothing decoded).
    pub fn open_count(&self) -> Result<usize, RolloutError> {
        Ok(self.tree.scan_prefix(OPEN_PREFIX, Order::Ascending, usize::MAX)?.len())
    }

    /// Rollouts not finished: what the runner (and a restarted coordinator) goes on with.
    pub fn open_ones(&self) -> Result<Vec<RolloutRecord>, RolloutError> {
        let mut out = Vec::new();
        for (k, _) in self.tree.scan_prefix(OPEN_PREFIX, Order::Ascending, usize::MAX)? {
            let text = String::from_utf8_lossy(&k[OPEN_PREFIX.len()..]).into_owned();
            let Ok(id) = text.parse::<u64>() else { continue };
            match self.get(id) {
                Ok(r) if !r.finished() => out.push(r),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "skipping a damaged rollout"),
            }
        }
        Ok(out)
    }
}

/// What makes VMs alike for the canary's draw: which way each dimension changes, and whether
/// it moves.
fn stratum(c: &PlannedChange) -> String {
    let way = |from: f64, to: f64| {
        if to < from {
            "down"
        } else if to > from {
            "up"
        } else {
            "same"
        }
    };
    let moves = if c.to_host.is_some() { ", moves" } else { "" };
    format!("cpu {} memory {}{moves}", way(c.from.cpu_cores, c.to.cpu_cores), way(c.from.memory_mib, c.to.memory_mib))
}

fn host_of(shared: &Shared, vm: &str) -> Option<String> {
    shared.state().host_of_vm(vm).map(|h| h.host_id.clone())
}

/// Each figure of `vm` over its samples taken at or after `since_ms` (before `before_ms`), as
/// the coordinator holds them; none if it has no such samples.
fn figures(shared: &Shared, vm: &str, since_ms: u64, before_ms: u64) -> Option<BTreeMap<String, f64>> {
    let state = shared.state();
    let h = state.host_of_vm(vm)?;
    let v = h.vms.get(vm)?;
    let given = h.vm_allocation(v).0;
    let points: Vec<&presage_protocol::pb::UsagePoint> =
        h.usage_history.get(vm)?.iter().filter(|p| p.sampled_at_ms >= since_ms && p.sampled_at_ms < before_ms).collect();
    window_figures(&points, v.vcpus.max(1) as f64, given)
}

/// The figures of one VM's samples in a window (see the module's documentation): the two
/// resource figures whenever there are samples; the application figures only from samples its
/// guest's recent reports cover (a VM whose guest says nothing is judged on the others).
pub fn window_figures(points: &[&presage_protocol::pb::UsagePoint], vcpus: f64, cores_given: f64) -> Option<BTreeMap<String, f64>> {
    if points.is_empty() {
        return None;
    }
    let n = points.len() as f64;
    let saturated = points.iter().filter(|p| p.cpu_utilisation as f64 * vcpus >= SATURATED * cores_given.min(vcpus)).count() as f64;
    let pressed = points.iter().filter(|p| p.memory_utilisation as f64 >= SATURATED).count() as f64;
    let mut out = BTreeMap::from([(FIGURES[0].to_string(), saturated / n), (FIGURES[1].to_string(), pressed / n)]);
    use crate::state::mean_reported;
    if let Some(latency) = mean_reported(points, |p| p.app_latency_over_slo) {
        out.insert(FIGURES[2].to_string(), latency);
    }
    if let Some(throughput) = mean_reported(points, |p| p.app_throughput_per_s) {
        // Its negative logarithm: the change from before is the relative drop, ln(before / during).
        out.insert(FIGURES[3].to_string(), -throughput.ln());
    }
    Some(out)
}

/// A plan as a new rollout: each VM's current configuration read from its agent's report, the
/// baseline figures over the `watch_ms` before now; journaled before anything is applied.
#[allow(clippy::too_many_arguments)]
pub fn create_at(
    shared: &Shared,
    proposed_by: &str,
    changes: Vec<Change>,
    canary_fraction: f64,
    watch_ms: u64,
    seed: u64,
    judge_cfg: JudgeConfig,
    now_ms: u64,
) -> Result<RolloutRecord, RolloutError> {
    if changes.is_empty() {
        return Err(RolloutError::Invalid { field: "changes", problem: "the plan has no changes".into() });
    }
    if !(canary_fraction > 0.0 && canary_fraction <= 1.0) {
        return Err(RolloutError::Invalid { field: "canary_fraction", problem: format!("{canary_fraction} is not in (0, 1]") });
    }
    let mut planned = Vec::new();
    for Change { vm, to, to_host, reason, predicted_gain } in changes {
        if planned.iter().any(|c: &PlannedChange| c.vm == vm) {
            return Err(RolloutError::Invalid { field: "changes", problem: format!("VM {vm} appears twice") });
        }
        if !(to.cpu_cores.is_finite() && to.cpu_cores >= 0.01 && to.memory_mib.is_finite() && to.memory_mib >= 64.0) {
            return Err(RolloutError::Invalid {
                field: "changes",
                problem: format!("VM {vm}: {to:?} is not a size (>= 0.01 cores, >= 64 MiB)"),
            });
        }
        if let Err(problem) = crate::sizing_ops::check_io(&to.io) {
            return Err(RolloutError::Invalid { field: "changes", problem: format!("VM {vm}: {}: {}", problem.0, problem.1) });
        }
        let from = crate::sizing_ops::current_config(shared, &vm).ok_or_else(|| RolloutError::UnknownVm(vm.clone()))?;
        let from_host = host_of(shared, &vm).unwrap_or_default();
        if let Some(h) = &to_host
            && shared.state().host(h).is_none()
        {
            return Err(RolloutError::UnknownHost { vm, host: h.clone() });
        }
        let to_host = to_host.filter(|h| *h != from_host);
        planned.push(PlannedChange { vm, to, from, reason, predicted_gain, from_host, to_host });
    }
    let vms: Vec<PlannedVm> = planned.iter().map(|c| PlannedVm { vm: c.vm.clone(), stratum: stratum(c) }).collect();
    let baseline =
        planned.iter().filter_map(|c| figures(shared, &c.vm, now_ms.saturating_sub(watch_ms), now_ms).map(|f| (c.vm.clone(), f))).collect();
    let id = shared.rollouts.next_id();
    let mut record = RolloutRecord {
        id,
        created_ms: now_ms,
        proposed_by: proposed_by.into(),
        changes: planned,
        rollout: Rollout::canary(&vms, canary_fraction, watch_ms, seed),
        judge: judge_cfg,
        baseline,
        verdicts: Vec::new(),
        log: Vec::new(),
        revert_attempts: 0,
    };
    let stages: Vec<usize> = record.rollout.stages.iter().map(|s| s.len()).collect();
    record.note(
        now_ms,
        format!("created by {proposed_by}: {} changes in stages of {stages:?}, watched {} s each", record.changes.len(), watch_ms / 1000),
    );
    shared.rollouts.save(&record)?;
    Ok(record)
}

impl RolloutRecord {
    pub fn to_wire(&self) -> presage_protocol::pb::RolloutView {
        use presage_decide::rollout::Phase;
        presage_protocol::pb::RolloutView {
            id: self.id,
            proposed_by: self.proposed_by.clone(),
            created_ms: self.created_ms,
            phase: match &self.rollout.phase {
                Phase::Applying { stage } => format!("applying stage {}", stage + 1),
                Phase::Watching { stage, .. } => format!("watching stage {}", stage + 1),
                Phase::RollingBack { reason } => format!("rolling back: {reason}"),
                Phase::Done => "done".into(),
                Phase::RolledBack { reason } => format!("rolled back: {reason}"),
            },
            stages: self.rollout.stages.iter().map(|s| s.join(",")).collect(),
            applied: self.rollout.applied.clone(),
            changes: self
                .changes
                .iter()
                .map(|c| presage_protocol::pb::PlannedResize {
                    vm_id: c.vm.clone(),
                    cpu_cores: c.to.cpu_cores,
                    memory_mib: c.to.memory_mib,
                    reason: c.reason.clone(),
                    predicted_gain: c.predicted_gain.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                    from: Some(c.from.to_wire()),
                    to_host: c.to_host.clone().unwrap_or_default(),
                    from_host: c.from_host.clone(),
                    disk_bytes_per_s: c.to.io.disk_bytes_per_s,
                    net_bytes_per_s: c.to.io.net_bytes_per_s,
                })
                .collect(),
            log: self.log.iter().map(|l| presage_protocol::pb::RolloutLogLine { at_ms: l.at_ms, what: l.what.clone() }).collect(),
        }
    }
}

use crate::shared::unix_ms as now_ms;

/// Resizes `vms` of the rollout to `to` (or back to `from`); returns those the agents applied.
async fn resize_all(shared: &Arc<Shared>, r: &RolloutRecord, vms: &[String], back: bool) -> Vec<String> {
    let mut done = Vec::new();
    for vm in vms {
        let Some(c) = r.change(vm) else { continue };
        let (config, reason) =
            if back { (&c.from, format!("rollout {} rolled back", r.id)) } else { (&c.to, format!("rollout {}: {}", r.id, c.reason)) };
        if current_is(shared, vm, config) {
            done.push(vm.clone());
            continue;
        }
        let req = presage_protocol::pb::ResizeVmRequest {
            vm_id: vm.clone(),
            cpu_cores: config.cpu_cores,
            memory_mib: config.memory_mib,
            dry_run: false,
            disk_bytes_per_s: config.io.disk_bytes_per_s,
            net_bytes_per_s: config.io.net_bytes_per_s,
        };
        let proposal = Proposal {
            proposed_by: format!("rollout {}", r.id),
            reason,
            predicted_gain: if back { BTreeMap::new() } else { c.predicted_gain.clone() },
            rollout: Some(r.id),
            // Forward, after its move: the destination (the reports may not say so yet).
            host: if back { None } else { c.to_host.clone() },
        };
        match resize_versioned(shared, req, proposal, now_ms()).await {
            Ok((out, _)) if out.accepted => done.push(vm.clone()),
            Ok((out, _)) => warn!(rollout = r.id, %vm, refusal = %out.refusal, "a rollout's resize was refused"),
            Err(e) => warn!(rollout = r.id, %vm, error = %e, "a rollout's resize failed"),
        }
    }
    done
}

/// Whether the VM has `config` now (nothing to ask: re-applying a stage after a restart).
fn current_is(shared: &Shared, vm: &str, config: &VmConfig) -> bool {
    crate::sizing_ops::current_config(shared, vm).is_some_and(|c| config.met_by(&c))
}

/// Moves those of `vms` that the rollout moves to their destination (or, `back`, to where they
/// were) through the migration executor: one journaled plan, run to its end. A VM already
/// there is not moved again. Returns the VMs that are where they should be after it.
async fn move_all(shared: &Arc<Shared>, r: &RolloutRecord, vms: &[String], back: bool) -> Vec<String> {
    let mut there = Vec::new();
    let mut moves = Vec::new();
    {
        let state = shared.state();
        for vm in vms {
            let Some(c) = r.change(vm) else { continue };
            let target = if back { Some(c.from_host.clone()) } else { c.to_host.clone() };
            let Some(host) = state.host_of_vm(vm) else { continue };
            let Some(sample) = host.vms.get(vm) else { continue };
            match target {
                Some(t) if t != host.host_id => moves.push(crate::plan_journal::MoveRecord::new(
                    vm,
                    &host.host_id,
                    &t,
                    if back { "rollback" } else { "rollout" },
                    host.vm_cpu_demand(sample),
                    sample.memory_bytes as f64 / 1048576.0,
                )),
                _ => there.push(vm.clone()),
            }
        }
    }
    if moves.is_empty() {
        return there;
    }
    let origin = format!("rollout {}", r.id);
    match crate::applier::record_plan(shared, &origin, moves, None) {
        Ok(plan) => {
            info!(rollout = r.id, plan = plan.id, moves = plan.moves.len(), "rollout moves planned");
            let finished = crate::applier::execute(shared, plan, shared.limits).await;
            there.extend(finished.moves.iter().filter(|m| m.step == crate::plan_journal::Step::Done).map(|m| m.vm_id.clone()));
        }
        Err(e) => warn!(rollout = r.id, error = %e, "journaling a rollout's moves failed; none was made"),
    }
    there
}

/// A stage's changes: moves first, then resizes on the host the VM runs on (a host's agent
/// keeps the sizes it applied: the destination's must hold the new size); back: sizes put back
/// where the VM is, then the moves undone. Returns the VMs whose whole change took effect.
async fn apply_all(shared: &Arc<Shared>, r: &RolloutRecord, vms: &[String], back: bool) -> Vec<String> {
    if back {
        let resized = resize_all(shared, r, vms, true).await;
        move_all(shared, r, &resized, true).await
    } else {
        let moved = move_all(shared, r, vms, false).await;
        // A moved VM is resized once its new host's agent reports it (until then that agent
        // may not know it as its own).
        for vm in &moved {
            if let Some(to) = r.change(vm).and_then(|c| c.to_host.as_deref()) {
                reported_on(shared, vm, to, ADOPTED_WITHIN).await;
            }
        }
        resize_all(shared, r, &moved, false).await
    }
}

/// How long a moved VM's new host has to report it before it is resized anyway.
const ADOPTED_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits (up to `limit`) until `host`'s agent reports `vm`; whether it did.
async fn reported_on(shared: &Shared, vm: &str, host: &str, limit: std::time::Duration) -> bool {
    let until = tokio::time::Instant::now() + limit;
    loop {
        if shared.state().host(host).is_some_and(|h| h.vms.contains_key(vm)) {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            warn!(%vm, %host, "the VM's new host has not reported it; resizing it anyway");
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Takes the rollout's next step at `now_ms` (journaled before and after) and returns the
/// record as it is after it.
pub async fn step(shared: &Arc<Shared>, mut r: RolloutRecord, now_ms: u64) -> Result<RolloutRecord, RolloutError> {
    let span = info_span!("rollout.step", rollout = r.id);
    async move {
        match r.rollout.next(now_ms) {
            Action::Wait { .. } | Action::Finished => {}
            Action::Apply(vms) => {
                r.note(now_ms, format!("applying {} changes: {}", vms.len(), vms.join(", ")));
                shared.rollouts.save(&r)?;
                let done = apply_all(shared, &r, &vms, false).await;
                let at = self::now_ms();
                r.rollout.applied(&done, at);
                r.note(at, format!("{} of {} applied; {:?}", done.len(), vms.len(), r.rollout.phase));
                shared.rollouts.save(&r)?;
            }
            Action::Judge { canary, control } => {
                let since = match r.rollout.phase {
                    presage_decide::rollout::Phase::Watching { since_ms, .. } => since_ms,
                    _ => now_ms,
                };
                // Each VM's figures during the watch, read once.
                let during: BTreeMap<&str, BTreeMap<String, f64>> =
                    canary.iter().chain(&control).filter_map(|vm| figures(shared, vm, since, u64::MAX).map(|f| (vm.as_str(), f))).collect();
                let changes = |vms: &[String], figure: &str| -> Vec<f64> {
                    vms.iter().filter_map(|vm| Some(during.get(vm.as_str())?.get(figure)? - r.baseline.get(vm)?.get(figure)?)).collect()
                };
                let figures: Vec<FigureChanges> = FIGURES
                    .iter()
                    .map(|f| FigureChanges { figure: f.to_string(), canary: changes(&canary, f), control: changes(&control, f) })
                    .collect();
                let verdict = judge(&figures, &r.judge);
                let summary: Vec<String> = verdict
                    .figures
                    .iter()
                    .map(|f| match f.worse {
                        None => format!("{} not judged (too few VMs report it)", f.figure),
                        Some(worse) => format!(
                            "{} canary {:+.3} control {:+.3} ({})",
                            f.figure,
                            f.canary_mean,
                            f.control_mean,
                            if worse { "worse" } else { "not worse" }
                        ),
                    })
                    .collect();
                r.rollout.judged(&verdict);
                r.verdicts.push(verdict);
                r.note(now_ms, format!("judged: {}; {:?}", summary.join("; "), r.rollout.phase));
                shared.rollouts.save(&r)?;
            }
            Action::Revert(vms) => {
                r.note(now_ms, format!("putting back {} changes: {}", vms.len(), vms.join(", ")));
                shared.rollouts.save(&r)?;
                let done = apply_all(shared, &r, &vms, true).await;
                r.rollout.rolled_back(&done);
                r.revert_attempts += 1;
                if !r.rollout.applied.is_empty() && r.revert_attempts >= MAX_REVERT_ATTEMPTS {
                    r.rollout
                        .give_up_rollback(&format!("{MAX_REVERT_ATTEMPTS} attempts refused or failed; see their configuration versions"));
                }
                r.note(self::now_ms(), format!("{} of {} put back; {:?}", done.len(), vms.len(), r.rollout.phase));
                shared.rollouts.save(&r)?;
            }
        }
        Ok(r)
    }
    .instrument(span)
    .await
}

/// An operator stops a rollout: every applied change is put back (by the runner).
pub fn abort(shared: &Shared, id: u64, who: &str) -> Result<RolloutRecord, RolloutError> {
    let mut r = shared.rollouts.get(id)?;
    r.rollout.abort(&format!("aborted by {who}"));
    r.note(now_ms(), format!("aborted by {who}"));
    shared.rollouts.save(&r)?;
    Ok(r)
}

/// A rollout of the operator's request, now.
pub fn start(shared: &Shared, r: presage_protocol::pb::StartRolloutRequest, who: &str) -> Result<RolloutRecord, RolloutError> {
    if r.watch_s == 0 || r.watch_s > 7 * 86_400 {
        return Err(RolloutError::Invalid { field: "watch_s", problem: format!("{} is outside 1..=604800", r.watch_s) });
    }
    let changes = r
        .changes
        .into_iter()
        .map(|c| Change {
            vm: c.vm_id,
            to: VmConfig {
                cpu_cores: c.cpu_cores,
                memory_mib: c.memory_mib,
                io: presage_decide::sizing::IoLimits { disk_bytes_per_s: c.disk_bytes_per_s, net_bytes_per_s: c.net_bytes_per_s },
            },
            to_host: (!c.to_host.is_empty()).then_some(c.to_host),
            reason: c.reason,
            predicted_gain: c.predicted_gain.into_iter().collect(),
        })
        .collect();
    create_at(shared, who, changes, r.canary_fraction, r.watch_s * 1000, r.seed, JudgeConfig::default(), now_ms())
}

/// Takes every open rollout's next step every `period`, from the journal (so a restart goes
/// on where the records say).
pub async fn runner(shared: Arc<Shared>, period: std::time::Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let open = match shared.rollouts.open_ones() {
            Ok(o) => o,
            Err(e) => {
                warn!(error = %e, "reading the open rollouts failed");
                continue;
            }
        };
        for r in open {
            let id = r.id;
            tokio::select! {
                _ = stop.cancelled() => return,
                out = step(&shared, r, now_ms()) => if let Err(e) = out { warn!(rollout = id, error = %e, "a rollout step failed") },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use presage_decide::rollout::{FigureChanges, JudgeConfig, judge};
    use presage_protocol::pb::UsagePoint;

    use super::*;

    fn window(cpu: f32, latency: f32, throughput: f32) -> Vec<UsagePoint> {
        (0..10)
            .map(|i| UsagePoint {
                sampled_at_ms: i,
                cpu_utilisation: cpu,
                app_latency_over_slo: latency * (1.0 + 0.02 * (i % 3) as f32),
                app_throughput_per_s: throughput,
                ..Default::default()
            })
            .collect()
    }

    fn figures_of(points: &[UsagePoint]) -> BTreeMap<String, f64> {
        window_figures(&points.iter().collect::<Vec<_>>(), 4.0, 4.0).unwrap()
    }

    #[test]
    fn application_figures_come_from_the_samples_a_guest_covers() {
        let f = figures_of(&window(0.5, 1.0, 100.0));
        // Ten samples at 1.00, 1.02, 1.04, 1.00, ...: three of each raised, four at 1.00.
        assert!((f["app_latency"] - 1.018).abs() < 1e-4, "{f:?}");
        assert!((f["app_throughput_drop"] + 100f64.ln()).abs() < 1e-6, "{f:?}");
        // No guest: judged on the resource figures alone.
        let f = figures_of(&window(0.5, 0.0, 0.0));
        assert_eq!(f.keys().collect::<Vec<_>>(), vec!["cpu_saturation", "memory_pressure"]);
        assert!(window_figures(&[], 4.0, 4.0).is_none());
    }

    /// Four canary and four control VMs, each with a guest: their figures' changes from a
    /// baseline window to a watch window, judged.
    fn verdict(canary_during: (f32, f32), control_during: (f32, f32)) -> presage_decide::rollout::Verdict {
        let mut changes: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
        for (k, (latency, throughput)) in [canary_during, control_during].into_iter().enumerate() {
            for vm in 0..4 {
                // VMs differ a little in load; the change is what is judged.
                let base = 1.0 + 0.05 * vm as f32;
                let before = figures_of(&window(0.3, 0.8 * base, 100.0 * base));
                let during = figures_of(&window(0.3, latency * base, throughput * base));
                for f in ["app_latency", "app_throughput_drop"] {
                    let group = changes.entry(f).or_default();
                    let d = during[f] - before[f];
                    if k == 0 { group.0.push(d) } else { group.1.push(d) }
                }
            }
        }
        let figures: Vec<FigureChanges> =
            changes.into_iter().map(|(f, (canary, control))| FigureChanges { figure: f.into(), canary, control }).collect();
        judge(&figures, &JudgeConfig::default())
    }

    #[test]
    fn a_canary_whose_applications_slow_down_or_serve_less_is_worse_a_change_of_the_load_is_not() {
        let worse = |v: &presage_decide::rollout::Verdict, f: &str| v.figures.iter().find(|x| x.figure == f).unwrap().worse;
        // Latency from 0.8 to 1.2 of the SLO in the canary, unchanged in the control.
        let v = verdict((1.2, 100.0), (0.8, 100.0));
        assert!(v.roll_back && worse(&v, "app_latency") == Some(true), "{v:?}");
        assert_eq!(worse(&v, "app_throughput_drop"), Some(false));
        // The canary completes 30 % fewer requests than before, the control as many.
        let v = verdict((0.8, 70.0), (0.8, 100.0));
        assert!(v.roll_back && worse(&v, "app_throughput_drop") == Some(true), "{v:?}");
        // Every VM slower and busier alike (the offered load rose): not the change's doing.
        let v = verdict((1.1, 130.0), (1.1, 130.0));
        assert!(!v.roll_back, "{v:?}");
    }
}
