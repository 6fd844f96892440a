//! The agent's sizing desk: the leases and resizes of this host's VMs, kept in the agent's
//! store and enforced by the agent itself, coordinator or not.
//!
//! - **Leases** (`leases` tree, by lease id) are admitted by the decision core's rule
//!   ([`LeaseBook::check`]) against what the agent sees of its own VMs, written and flushed
//!   before their quotas change, and ended at their absolute deadline — or earlier when the
//!   lender's own forecast or use needs the capacity back, or a party left the host — by
//!   [`SizingDesk::enforce`], which the sampling cycle runs every cycle. An agent restarted
//!   mid-lease reads its leases back and keeps their deadlines.
//! - **Resizes** (`resizes` tree, by VM id) follow KEP-1287's record: desired, allocated,
//!   acknowledged (read back), actual (the balloon as the guest reached it), and an outcome
//!   (`in_progress`, `deferred` — re-checked every cycle —, `infeasible`, `error` — retried —,
//!   `done`). The record is written before the hypervisor is touched, and re-applied after a
//!   restart.
//!
//! What a VM is given is its own allocation, less what it lends, plus what it borrows: the desk
//! applies that as its CFS quota (and, for memory leases, its balloon) through
//! [`Hypervisor::resize`], lenders' decreases before borrowers' increases.

use std::collections::BTreeMap;
use std::sync::Arc;

use presage_decide::sizing::lease::{Lease, LeaseBook, LeaseEnd, LeaseHost, LeaseParty, LeaseRefusal, LeaseResource};
use presage_decide::sizing::progress::{Admission, ResizeRecord, ResizeStatus, admit_resize};
use presage_decide::sizing::{Allocation, IoLimits};
use presage_protocol::pb::{self, Report, VmSample, VmSize};
use tracing::{info, info_span, warn};

use crate::hypervisor::{Hypervisor, HypervisorError};
use crate::store::{KvStore, KvTree, Order, StoreError};

pub const LEASES_TREE: &str = "leases";
pub const RESIZES_TREE: &str = "resizes";
/// A balloon whose actual size stays this far from its target is reported, not assumed.
pub const BALLOON_TOLERANCE: f64 = 0.05;
/// Attempts at a size the guest does not follow (its balloon) before the resize is infeasible:
/// the VM keeps what it was last acknowledged, and nothing is retried until another size is
/// asked for.
pub const GUEST_ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum SizingError {
    #[error(transparent)]
    Refused(#[from] LeaseRefusal),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{tree} store entry {key:?} is unreadable ({detail}); it was left in place")]
    Corrupt { tree: &'static str, key: String, detail: String },
    #[error("no lease {0} on this host")]
    NoLease(String),
    #[error("VM {0} is not on this host")]
    NoVm(String),
    #[error("resize of {vm} is infeasible: {why}")]
    Infeasible { vm: String, why: String },
    #[error(transparent)]
    Hypervisor(#[from] HypervisorError),
}

/// What the desk knows of one VM this cycle (from the hypervisor's observation, the forecasts
/// and the policy the coordinator sent with a lease).
#[derive(Clone, Debug, PartialEq)]
pub struct VmView {
    pub vm_id: String,
    /// Its own allocation: the resize record's, else its size as observed (vCPUs as cores).
    pub allocated: Allocation,
    /// The domain's maximum.
    pub limits: Allocation,
    /// What it needs over a lease's horizon (p90 x margin, its recent use), cores; `None`
    /// without a forecast (then it keeps everything it has and lends nothing).
    pub cpu_need: Option<f64>,
    /// Its disk and interface targets: what its I/O and network limits are spread over.
    pub disks: Vec<String>,
    pub interfaces: Vec<String>,
}

impl VmView {
    /// A VM as observed: its vCPUs as cores, its memory; its need from its published forecast
    /// over `horizon` steps times `margin`, and its last use.
    pub fn observed(s: &VmSample, horizon: usize, margin: f64) -> VmView {
        let cores = s.vcpus.max(1) as f64;
        let mem = (s.memory_bytes >> 20) as f64;
        let used = s.cpu_utilisation * cores;
        let need = s
            .forecast
            .as_ref()
            .filter(|f| !f.cpu_p90.is_empty())
            .map(|f| f.cpu_p90.iter().take(horizon.max(1)).fold(0.0f64, |m, v| m.max(*v as f64)) * cores * margin)
            .map(|n| n.max(used * margin));
        VmView {
            vm_id: s.vm_id.clone(),
            allocated: Allocation::new(cores, mem),
            limits: Allocation::new(cores, mem),
            cpu_need: need,
            disks: s.disk_devices.clone(),
            interfaces: s.interface_devices.clone(),
        }
    }
}

/// Lease horizon (5-minute steps) and margin the agent judges a lender's need with.
pub const LENDER_HORIZON_STEPS: usize = 3;
pub const LENDER_MARGIN: f64 = 1.25;

/// Every running VM of a report as the desk sees it.
pub fn views(report: &Report) -> Vec<VmView> {
    report
        .vms
        .iter()
        .filter(|v| v.state == pb::VmState::Running as i32)
        .map(|s| VmView::observed(s, LENDER_HORIZON_STEPS, LENDER_MARGIN))
        .collect()
}

/// A new desired allocation for a VM, and why (`dry_run`: check admission only).
#[derive(Clone, Debug, PartialEq)]
pub struct ResizeAsk {
    pub vm: String,
    pub desired: Allocation,
    /// I/O and network limits with it (unset: left as they are).
    pub io: IoLimits,
    pub reason: String,
    pub dry_run: bool,
}

impl ResizeAsk {
    pub fn new(vm: &str, desired: Allocation, reason: &str) -> ResizeAsk {
        ResizeAsk { vm: vm.into(), desired, io: IoLimits::default(), reason: reason.into(), dry_run: false }
    }
}

/// A VM-wide I/O or network limit spread evenly over its devices (a limit of 0, none, stays
/// 0 on each; a positive one is at least 1 unit on each, as 0 would remove it). Even, as the
/// hypervisor's throttles are per device and a VM's traffic per device is not measured
/// apart; most VMs have one of each.
pub fn spread_io(io: IoLimits, disks: &[String], interfaces: &[String]) -> (Vec<pb::DiskLimit>, Vec<pb::InterfaceLimit>) {
    let share = |total: f64, unit: f64, n: usize| if total > 0.0 { ((total / unit / n as f64).ceil() as u64).max(1) } else { 0 };
    let disk = io.disk_bytes_per_s.filter(|_| !disks.is_empty()).map(|t| share(t, 1.0, disks.len()));
    let net = io.net_bytes_per_s.filter(|_| !interfaces.is_empty()).map(|t| share(t, 1024.0, interfaces.len()));
    (
        disk.map(|b| disks.iter().map(|d| pb::DiskLimit { device: d.clone(), total_iops_sec: 0, total_bytes_sec: b }).collect())
            .unwrap_or_default(),
        net.map(|k| interfaces.iter().map(|i| pb::InterfaceLimit { device: i.clone(), inbound_kib_s: k, outbound_kib_s: k }).collect())
            .unwrap_or_default(),
    )
}

/// The host's leases and resizes, durable.
pub struct SizingDesk {
    store: Arc<dyn KvStore>,
    leases_tree: Arc<dyn KvTree>,
    resizes_tree: Arc<dyn KvTree>,
    book: LeaseBook,
    resizes: BTreeMap<String, ResizeRecord>,
    /// What VMs may be given in all, and the memory kept back for memory leases.
    capacity: Allocation,
    memory_reserve_mib: f64,
    /// What was last applied per VM (quota, balloon; I/O and network limits), so unchanged
    /// VMs are not touched.
    applied: BTreeMap<String, Allocation>,
    applied_io: BTreeMap<String, IoLimits>,
}

fn load<T: serde::de::DeserializeOwned>(tree: &Arc<dyn KvTree>, name: &'static str) -> Result<Vec<T>, SizingError> {
    let mut out = Vec::new();
    for (k, v) in tree.scan_prefix(b"", Order::Ascending, usize::MAX)? {
        out.push(serde_json::from_slice(&v).map_err(|e| SizingError::Corrupt {
            tree: name,
            key: String::from_utf8_lossy(&k).into_owned(),
            detail: e.to_string(),
        })?);
    }
    Ok(out)
}

impl SizingDesk {
    /// Loads the leases and resizes kept in `store`; an unreadable entry stops the start and is
    /// left in place.
    pub fn open(store: Arc<dyn KvStore>, capacity: Allocation, memory_reserve_mib: f64) -> Result<SizingDesk, SizingError> {
        let leases_tree = store.tree(LEASES_TREE)?;
        let resizes_tree = store.tree(RESIZES_TREE)?;
        let book = LeaseBook::from_entries(load(&leases_tree, LEASES_TREE)?);
        let resizes = load::<ResizeRecord>(&resizes_tree, RESIZES_TREE)?.into_iter().map(|r| (r.vm_id.clone(), r)).collect();
        Ok(SizingDesk {
            store,
            leases_tree,
            resizes_tree,
            book,
            resizes,
            capacity,
            memory_reserve_mib,
            applied: BTreeMap::new(),
            applied_io: BTreeMap::new(),
        })
    }

    pub fn leases(&self) -> &LeaseBook {
        &self.book
    }

    pub fn resizes(&self) -> impl Iterator<Item = &ResizeRecord> {
        self.resizes.values()
    }

    /// The leases and resizes, as reported to the coordinator.
    pub fn state(&self) -> pb::SizingState {
        pb::SizingState {
            leases: self.book.entries().iter().map(pb::LeaseEntry::from).collect(),
            resizes: self.resizes.values().map(pb::ResizeEntry::from).collect(),
        }
    }

    /// Each VM's own allocation: its resize record's (an infeasible ask keeps the allocation it
    /// found), else as observed.
    fn with_records(&self, vms: &[VmView]) -> Vec<VmView> {
        vms.iter()
            .map(|v| match self.resizes.get(&v.vm_id) {
                Some(r) => VmView { allocated: r.allocated, ..v.clone() },
                None => v.clone(),
            })
            .collect()
    }

    fn parties(&self, vms: &[VmView], lease: Option<&Lease>, max_borrow: Allocation) -> Vec<LeaseParty> {
        vms.iter()
            .map(|v| LeaseParty {
                vm_id: v.vm_id.clone(),
                allocated: v.allocated,
                limits: v.limits,
                keep: Allocation::new(v.cpu_need.map_or(v.allocated.cpu_cores, |n| n.min(v.allocated.cpu_cores)), v.allocated.memory_mib),
                may_lend: v.cpu_need.is_some(),
                may_borrow: true,
                max_borrow,
                max_lease_ms: lease.map_or(u64::MAX, |l| l.deadline_ms.saturating_sub(l.granted_at_ms)),
            })
            .collect()
    }

    /// Admits `lease` by the host's own rule against `vms` (what the agent sees now), writes it,
    /// then applies it (the lender's quota goes down before the borrower's goes up). `max_borrow`
    /// is the borrower's limit from its policy.
    pub fn grant(
        &mut self,
        lease: Lease,
        vms: &[VmView],
        max_borrow: Allocation,
        now_ms: u64,
        hv: &dyn Hypervisor,
    ) -> Result<(), SizingError> {
        let _span =
            info_span!("lease_grant", id = %lease.id, borrower = %lease.borrower, lender = ?lease.lender, amount = lease.amount).entered();
        let vms = self.with_records(vms);
        let parties = self.parties(&vms, Some(&lease), max_borrow);
        let host = LeaseHost { capacity: self.capacity, memory_reserve_mib: self.memory_reserve_mib, vms: &parties };
        self.book.check(&lease, &host, now_ms)?;
        self.leases_tree.insert(lease.id.as_bytes(), &serde_json::to_vec(&lease).expect("a lease serialises"))?;
        self.store.flush()?;
        self.book.admit(lease.clone(), &host, now_ms)?;
        info!(reason = %lease.reason, deadline_ms = lease.deadline_ms, "lease granted");
        self.apply(&vms, now_ms, hv);
        Ok(())
    }

    /// Ends lease `id` now (an operator or the coordinator revoked it).
    pub fn revoke(&mut self, id: &str, by: &str, vms: &[VmView], now_ms: u64, hv: &dyn Hypervisor) -> Result<Lease, SizingError> {
        let lease = self.book.get(id).cloned().ok_or_else(|| SizingError::NoLease(id.into()))?;
        self.end(&lease, &LeaseEnd::Revoked { by: by.into() })?;
        self.apply(&self.with_records(vms), now_ms, hv);
        Ok(lease)
    }

    fn end(&mut self, lease: &Lease, why: &LeaseEnd) -> Result<(), SizingError> {
        self.leases_tree.remove(lease.id.as_bytes())?;
        self.store.flush()?;
        self.book.remove(&lease.id);
        info!(id = %lease.id, borrower = %lease.borrower, lender = ?lease.lender, why = %why.describe(), "lease ended");
        Ok(())
    }

    /// The cycle's enforcement: ends every lease that is due (deadline, a party gone, a lender
    /// whose need exceeds what it keeps), re-checks deferred and failed resizes, and applies what
    /// each VM should be given. Returns the leases it ended, with why.
    pub fn enforce(&mut self, vms: &[VmView], now_ms: u64, hv: &dyn Hypervisor) -> Vec<(Lease, LeaseEnd)> {
        let _span = info_span!("sizing_enforce", leases = self.book.len(), vms = vms.len()).entered();
        let vms = self.with_records(vms);
        let find = |id: &str| vms.iter().find(|v| v.vm_id == id);
        let due = self.book.due(
            now_ms,
            |id| find(id).is_some(),
            |id| find(id).map_or_else(Allocation::default, |v| v.allocated),
            |id, res| match res {
                LeaseResource::Cpu => find(id).and_then(|v| v.cpu_need),
                LeaseResource::Memory => None,
            },
        );
        let mut ended = Vec::new();
        for (lease, why) in due {
            match self.end(&lease, &why) {
                Ok(()) => ended.push((lease, why)),
                // Left in the book: ended at the next cycle (it holds nothing past its deadline).
                Err(e) => warn!(id = %lease.id, error = %e, "ending a lease failed; retried next cycle"),
            }
        }
        self.retry_resizes(&vms, now_ms, hv);
        self.apply(&vms, now_ms, hv);
        ended
    }

    /// Records a new desired allocation for `vm` (checkpointed before anything is applied) and
    /// tries it at once. A dry run checks admission only and records nothing.
    pub fn resize(&mut self, ask: &ResizeAsk, vms: &[VmView], now_ms: u64, hv: &dyn Hypervisor) -> Result<ResizeRecord, SizingError> {
        let ResizeAsk { vm, desired, io, reason, dry_run } = ask;
        let (vm, desired, dry_run) = (vm.as_str(), *desired, *dry_run);
        let _span = info_span!("resize", vm, cpu_cores = desired.cpu_cores, memory_mib = desired.memory_mib, ?io, dry_run).entered();
        io.check().map_err(|why| SizingError::Infeasible { vm: vm.into(), why })?;
        let vms = self.with_records(vms);
        let view = vms.iter().find(|v| v.vm_id == vm).ok_or_else(|| SizingError::NoVm(vm.into()))?;
        let mut record = ResizeRecord::ask(vm, self.resizes.get(vm), view.allocated, desired, reason, now_ms);
        record.io = record.io.updated(*io);
        self.admit(&mut record, &vms, now_ms);
        let infeasible =
            (record.status == ResizeStatus::Infeasible).then(|| SizingError::Infeasible { vm: vm.into(), why: record.message.clone() });
        if dry_run {
            return infeasible.map_or(Ok(record), Err);
        }
        self.save(&record)?;
        if let Some(e) = infeasible {
            self.resizes.insert(vm.into(), record);
            return Err(e);
        }
        self.resizes.insert(vm.into(), record);
        self.retry_resizes(&vms, now_ms, hv);
        self.apply(&self.with_records(&vms), now_ms, hv);
        Ok(self.resizes[vm].clone())
    }

    fn save(&self, r: &ResizeRecord) -> Result<(), SizingError> {
        self.resizes_tree.insert(r.vm_id.as_bytes(), &serde_json::to_vec(r).expect("a resize record serialises"))?;
        self.store.flush()?;
        Ok(())
    }

    /// Admission on this host: infeasible beyond the domain or the host; deferred while others'
    /// allocations and what the host lends leave too little; else allocated.
    fn admit(&self, r: &mut ResizeRecord, vms: &[VmView], now_ms: u64) {
        let Some(view) = vms.iter().find(|v| v.vm_id == r.vm_id) else {
            r.status = ResizeStatus::Infeasible;
            r.message = "the VM is not on this host".into();
            return;
        };
        let others = vms.iter().filter(|v| v.vm_id != r.vm_id).fold(Allocation::default(), |a, v| a.plus(v.allocated));
        let others = self.book.given_besides(others, self.memory_reserve_mib, now_ms);
        // What it borrows rides on top of its own allocation: both within its domain.
        let (_, borrowed) = self.book.flows(&r.vm_id, now_ms);
        match admit_resize(r.desired, view.allocated, view.limits.minus(borrowed), self.capacity, others) {
            Admission::Admit => {
                r.allocated = r.desired;
                r.status = ResizeStatus::InProgress;
                r.message.clear();
            }
            Admission::Defer(why) => {
                r.status = ResizeStatus::Deferred;
                r.message = why;
            }
            Admission::Infeasible(why) => {
                r.status = ResizeStatus::Infeasible;
                r.message = why;
            }
        }
    }

    fn retry_resizes(&mut self, vms: &[VmView], now_ms: u64, _hv: &dyn Hypervisor) {
        let pending: Vec<String> =
            self.resizes.values().filter(|r| matches!(r.status, ResizeStatus::Deferred)).map(|r| r.vm_id.clone()).collect();
        for vm in pending {
            let mut r = self.resizes[&vm].clone();
            self.admit(&mut r, vms, now_ms);
            if r.status != ResizeStatus::Deferred {
                r.updated_ms = now_ms;
                if let Err(e) = self.save(&r) {
                    warn!(vm, error = %e, "saving a resize record failed; retried next cycle");
                    continue;
                }
            }
            self.resizes.insert(vm, r);
        }
    }

    /// What `vm` should be given now: its allocation, less what it lends, plus what it borrows.
    pub fn effective(&self, vm: &VmView, now_ms: u64) -> Allocation {
        self.book.effective(&vm.vm_id, vm.allocated, now_ms)
    }

    /// Applies what each VM should be given where it differs from what was last applied,
    /// decreases first; records each resize's outcome.
    fn apply(&mut self, vms: &[VmView], now_ms: u64, hv: &dyn Hypervisor) {
        let mut changes: Vec<(String, Allocation, Allocation)> = Vec::new();
        let mut devices: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
        for v in vms {
            let managed = self.resizes.get(&v.vm_id).is_some_and(|r| r.status.retried() || r.status == ResizeStatus::Done)
                || self.book.entries().iter().any(|l| l.borrower == v.vm_id || l.lender.as_deref() == Some(v.vm_id.as_str()))
                || self.applied.contains_key(&v.vm_id);
            if !managed {
                continue;
            }
            let want = self.effective(v, now_ms);
            let before = self.applied.get(&v.vm_id).copied().unwrap_or(v.allocated);
            let retry = self.resizes.get(&v.vm_id).is_some_and(|r| matches!(r.status, ResizeStatus::InProgress | ResizeStatus::Error));
            let io = self.resizes.get(&v.vm_id).map(|r| r.io).unwrap_or_default();
            devices.insert(v.vm_id.clone(), (v.disks.clone(), v.interfaces.clone()));
            if retry
                || io != self.applied_io.get(&v.vm_id).copied().unwrap_or_default()
                || (want.cpu_cores - before.cpu_cores).abs() > 1e-6
                || (want.memory_mib - before.memory_mib).abs() > 0.5
                || !self.applied.contains_key(&v.vm_id)
            {
                changes.push((v.vm_id.clone(), before, want));
            }
        }
        changes.sort_by_key(|(_, before, want)| !(want.cpu_cores < before.cpu_cores || want.memory_mib < before.memory_mib));
        for (vm, _, want) in changes {
            let io = self.resizes.get(&vm).map(|r| r.io).unwrap_or_default();
            let (disks, interfaces) = devices.get(&vm).map(|(d, i)| spread_io(io, d, i)).unwrap_or_default();
            // A limit asked of a VM without such a device cannot be applied: said, not assumed.
            let unplaced: Vec<&str> = [
                (io.disk_bytes_per_s.is_some_and(|b| b > 0.0) && disks.is_empty(), "disk"),
                (io.net_bytes_per_s.is_some_and(|b| b > 0.0) && interfaces.is_empty(), "interface with a target"),
            ]
            .into_iter()
            .filter_map(|(missing, what)| missing.then_some(what))
            .collect();
            let size = VmSize {
                cpu_quota_cores: Some(want.cpu_cores),
                memory_mib: Some(want.memory_mib.round() as u64),
                disks,
                interfaces,
                ..VmSize::default()
            };
            let outcome = hv.resize(&vm, &size);
            if let Some(r) = self.resizes.get(&vm).cloned() {
                let mut r = r;
                match &outcome {
                    Ok(read) => {
                        let s = read.size.clone().unwrap_or_default();
                        r.acknowledged = Allocation::new(s.cpu_quota_cores.unwrap_or(want.cpu_cores), s.memory_mib.unwrap_or(0) as f64);
                        r.actual = Allocation::new(r.acknowledged.cpu_cores, read.balloon_actual_mib.unwrap_or(0) as f64);
                        let short = read
                            .balloon_actual_mib
                            .is_some_and(|a| (a as f64 - want.memory_mib).abs() > BALLOON_TOLERANCE * want.memory_mib);
                        if short {
                            r.message = format!(
                                "the guest holds {} MiB, not the balloon target {:.0} MiB",
                                read.balloon_actual_mib.unwrap_or(0),
                                want.memory_mib
                            );
                        } else if matches!(r.status, ResizeStatus::InProgress | ResizeStatus::Error) {
                            r.message.clear();
                        }
                        if !unplaced.is_empty() {
                            r.message = format!("its limits were not applied where it has no {}", unplaced.join(" and no "));
                        }
                        // A deferred or infeasible record keeps its outcome: what was applied
                        // is the VM's earlier size (or a lease's change), not what it asks for.
                        if matches!(r.status, ResizeStatus::InProgress | ResizeStatus::Error) {
                            r.status = ResizeStatus::Done;
                        }
                    }
                    Err(HypervisorError::Guest(why)) if r.attempts + 1 >= GUEST_ATTEMPTS => {
                        r.attempts += 1;
                        r.status = ResizeStatus::Infeasible;
                        r.allocated = r.acknowledged;
                        r.message = format!(
                            "{why} (attempt {}: the guest does not follow; it keeps its acknowledged size until another is asked for)",
                            r.attempts
                        );
                    }
                    Err(e) => {
                        r.status = ResizeStatus::Error;
                        r.attempts += 1;
                        r.message = e.to_string();
                    }
                }
                r.updated_ms = now_ms;
                if let Err(e) = self.save(&r) {
                    warn!(vm, error = %e, "saving a resize record failed");
                }
                self.resizes.insert(vm.clone(), r);
            }
            match outcome {
                Ok(_) => {
                    self.applied_io.insert(vm.clone(), io);
                    self.applied.insert(vm, want);
                }
                Err(e) => warn!(vm, error = %e, "applying a size failed; retried next cycle"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::simulated::SimulatedHypervisor;
    use crate::store::SledStore;

    /// The two-VM host and a sled store in `dir`.
    fn fixture(dir: &std::path::Path) -> (SimulatedHypervisor, Arc<dyn KvStore>) {
        (hv(dir), Arc::new(SledStore::open(&dir.join("store")).unwrap()))
    }

    fn hv(dir: &std::path::Path) -> SimulatedHypervisor {
        // Two VMs busy all the time (100 % of their vCPUs).
        let traces = dir.join("traces");
        std::fs::create_dir_all(&traces).unwrap();
        for name in ["lender", "borrower"] {
            std::fs::write(traces.join(name), "100\n".repeat(300)).unwrap();
        }
        SimulatedHypervisor::load(&crate::config::SimulatedConfig::replaying(traces)).unwrap()
    }

    fn views(need: Option<f64>) -> Vec<VmView> {
        ["lender", "borrower"]
            .into_iter()
            .map(|id| VmView {
                vm_id: id.into(),
                allocated: Allocation::new(1.0, 1024.0),
                limits: Allocation::new(1.0, 1740.0),
                cpu_need: need,
                disks: vec!["vda".into(), "vdb".into()],
                interfaces: vec!["vnet0".into()],
            })
            .collect()
    }

    fn lease(deadline_ms: u64) -> Lease {
        Lease {
            id: "l1".into(),
            resource: LeaseResource::Cpu,
            amount: 0.5,
            lender: Some("lender".into()),
            borrower: "borrower".into(),
            granted_at_ms: 0,
            deadline_ms,
            reason: "test".into(),
        }
    }

    #[test]
    fn a_lease_survives_a_restart_and_ends_at_its_deadline_without_a_coordinator() {
        let dir = tempfile::tempdir().unwrap();
        let h = hv(dir.path());
        let cap = Allocation::new(4.0, 8192.0);
        let borrow = Allocation::new(2.0, 0.0);
        // The borrower is at its domain's maximum (1 vCPU): it cannot hold more than 1 core.
        {
            let store: Arc<dyn KvStore> = Arc::new(SledStore::open(&dir.path().join("store")).unwrap());
            let mut desk = SizingDesk::open(store, cap, 0.0).unwrap();
            let e = desk.grant(lease(60_000), &views(Some(0.2)), borrow, 0, &h).unwrap_err();
            assert!(e.to_string().contains("domain's maximum"), "{e}");
        }
        let mut vms = views(Some(0.2));
        vms[1].allocated = Allocation::new(0.5, 1024.0);
        let store: Arc<dyn KvStore> = Arc::new(SledStore::open(&dir.path().join("store")).unwrap());
        let mut desk = SizingDesk::open(store.clone(), cap, 0.0).unwrap();
        desk.grant(lease(60_000), &vms, borrow, 0, &h).unwrap();
        // Applied: the lender is held to 0.5 core (50 % of its vCPU), the borrower gets 1.
        let o = h.observe().unwrap();
        let util = |id: &str| o.vms.iter().find(|v| v.vm_id == id).unwrap().cpu_utilisation;
        assert_eq!((util("lender"), util("borrower")), (0.5, 1.0));
        drop(desk);
        // A restarted agent reads the lease back and keeps its deadline.
        let mut desk = SizingDesk::open(store.clone(), cap, 0.0).unwrap();
        assert_eq!(desk.leases().entries().len(), 1);
        assert!(desk.enforce(&vms, 59_999, &h).is_empty());
        let ended = desk.enforce(&vms, 60_000, &h);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].1, LeaseEnd::Deadline);
        let o = h.observe().unwrap();
        assert_eq!(o.vms.iter().find(|v| v.vm_id == "lender").unwrap().cpu_utilisation, 1.0, "the lender has its quota back");
        assert!(SizingDesk::open(store, cap, 0.0).unwrap().leases().is_empty(), "gone from the store too");
    }

    #[test]
    fn a_lender_that_needs_its_capacity_takes_it_back_early() {
        let dir = tempfile::tempdir().unwrap();
        let (h, store) = fixture(dir.path());
        let mut desk = SizingDesk::open(store, Allocation::new(4.0, 8192.0), 0.0).unwrap();
        let mut vms = views(Some(0.2));
        vms[1].allocated = Allocation::new(0.5, 1024.0);
        desk.grant(lease(600_000), &vms, Allocation::new(2.0, 0.0), 0, &h).unwrap();
        // Its forecast says 0.9 core within the horizon: it keeps 0.5 and takes the lease back.
        vms[0].cpu_need = Some(0.9);
        let ended = desk.enforce(&vms, 1_000, &h);
        assert!(matches!(ended[..], [(_, LeaseEnd::LenderNeeds { .. })]), "{ended:?}");
        // A lender that left ends its leases too.
        desk.grant(
            Lease { id: "l2".into(), ..lease(600_000) },
            &views(Some(0.2))
                .into_iter()
                .map(|mut v| {
                    if v.vm_id == "borrower" {
                        v.allocated.cpu_cores = 0.5
                    }
                    v
                })
                .collect::<Vec<_>>(),
            Allocation::new(2.0, 0.0),
            2_000,
            &h,
        )
        .unwrap();
        let ended = desk.enforce(&vms[1..], 3_000, &h);
        assert!(matches!(&ended[..], [(_, LeaseEnd::Gone { vm })] if vm == "lender"), "{ended:?}");
    }

    /// Property: whatever the order of grants, cycles and agent restarts, no lease is held at a
    /// cycle at or after its deadline, and a restarted agent holds exactly what it had admitted.
    #[test]
    fn leases_end_by_their_deadline_across_random_restarts() {
        let (mut granted, mut expired, mut restarts) = (0, 0, 0);
        for seed in 0..25 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let dir = tempfile::tempdir().unwrap();
            let h = hv(dir.path());
            let open = || {
                let store: Arc<dyn KvStore> = Arc::new(SledStore::open(&dir.path().join("store")).unwrap());
                SizingDesk::open(store, Allocation::new(4.0, 8192.0), 0.0).unwrap()
            };
            let mut desk = open();
            let mut vms = views(Some(0.2));
            vms[1].allocated = Allocation::new(0.5, 1024.0);
            let mut now = 1_000u64;
            for step in 0..60 {
                now += rng.u64(0..20_000);
                match rng.u8(0..4) {
                    0 => {
                        let l =
                            Lease { id: format!("s{seed}-{step}"), granted_at_ms: now, amount: 0.25, ..lease(now + rng.u64(1..60_000)) };
                        granted += usize::from(desk.grant(l, &vms, Allocation::new(2.0, 0.0), now, &h).is_ok());
                    }
                    1 => {
                        restarts += 1;
                        let held: Vec<Lease> = desk.leases().entries().to_vec();
                        drop(desk);
                        desk = open();
                        let mut again = desk.leases().entries().to_vec();
                        again.sort_by(|a, b| a.id.cmp(&b.id));
                        let mut held = held;
                        held.sort_by(|a, b| a.id.cmp(&b.id));
                        assert_eq!(again, held, "seed {seed}: a restart keeps what was admitted");
                    }
                    _ => {}
                }
                expired += desk.enforce(&vms, now, &h).iter().filter(|(_, why)| *why == LeaseEnd::Deadline).count();
                for l in desk.leases().entries() {
                    assert!(l.deadline_ms > now, "seed {seed} step {step}: {l:?} outlived its deadline ({now})");
                }
                let (lent, _) = desk.leases().flows("lender", now);
                assert!(1.0 - lent.cpu_cores >= 0.2 - 1e-9, "seed {seed}: the lender kept its need");
            }
        }
        assert!(
            granted > 50 && expired > 25 && restarts > 50,
            "the runs exercised it: {granted} granted, {expired} expired, {restarts} restarts"
        );
    }

    #[test]
    fn resizes_are_checkpointed_deferred_and_infeasible_with_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let (h, store) = fixture(dir.path());
        // 1.5 cores in all: the borrower's 1 core leaves 0.5 for the lender.
        let mut desk = SizingDesk::open(store.clone(), Allocation::new(1.5, 8192.0), 0.0).unwrap();
        let vms = views(None);
        let r = desk.resize(&ResizeAsk::new("lender", Allocation::new(0.25, 1024.0), "operator"), &vms, 0, &h).unwrap();
        assert_eq!(r.status, ResizeStatus::Done, "{r:?}");
        assert_eq!(h.observe().unwrap().vms.iter().find(|v| v.vm_id == "lender").unwrap().cpu_utilisation, 0.25);
        let e = desk.resize(&ResizeAsk::new("lender", Allocation::new(2.0, 1024.0), "operator"), &vms, 0, &h).unwrap_err();
        assert!(e.to_string().contains("domain's maximum"), "{e}");
        let r = desk.resizes().find(|r| r.vm_id == "lender").unwrap();
        assert_eq!(r.status, ResizeStatus::Infeasible, "recorded, not retried");
        // The borrower's 1 core leaves 0.5: 0.75 waits.
        let r = desk.resize(&ResizeAsk::new("lender", Allocation::new(0.75, 1024.0), "operator"), &vms, 0, &h).unwrap();
        assert_eq!(r.status, ResizeStatus::Deferred, "{r:?}");
        assert!(r.message.contains("given to others"), "{}", r.message);
        // A dry run records nothing.
        desk.resize(&ResizeAsk { dry_run: true, ..ResizeAsk::new("borrower", Allocation::new(0.5, 1024.0), "operator") }, &vms, 0, &h)
            .unwrap();
        assert!(desk.resizes().all(|r| r.vm_id != "borrower"));
        // The borrower shrinks; the deferred resize goes through at the next cycle.
        desk.resize(&ResizeAsk::new("borrower", Allocation::new(0.5, 1024.0), "operator"), &vms, 0, &h).unwrap();
        desk.enforce(&vms, 10, &h);
        let lender = desk.resizes().find(|r| r.vm_id == "lender").unwrap().clone();
        assert_eq!((lender.status, lender.allocated.cpu_cores), (ResizeStatus::Done, 0.75), "{lender:?}");
        drop(desk);
        // The records are in the store; a restart re-applies them.
        let mut desk = SizingDesk::open(store, Allocation::new(1.5, 8192.0), 0.0).unwrap();
        assert_eq!(desk.resizes().count(), 2);
        assert!(desk.resize(&ResizeAsk { dry_run: true, ..ResizeAsk::new("nope", Allocation::new(1.0, 1.0), "x") }, &vms, 0, &h).is_err());
    }

    #[test]
    fn io_limits_are_spread_over_the_devices_kept_across_resizes_and_removed_by_zero() {
        let dir = tempfile::tempdir().unwrap();
        let (h, store) = fixture(dir.path());
        let mut desk = SizingDesk::open(store.clone(), Allocation::new(4.0, 8192.0), 0.0).unwrap();
        let vms = views(None);
        let mib = 1_048_576.0;
        let ask = ResizeAsk {
            io: IoLimits { disk_bytes_per_s: Some(100.0 * mib), net_bytes_per_s: Some(8.0 * mib) },
            ..ResizeAsk::new("lender", Allocation::new(1.0, 1024.0), "operator")
        };
        let r = desk.resize(&ask, &vms, 0, &h).unwrap();
        assert_eq!(r.status, ResizeStatus::Done, "{r:?}");
        let size = h.read_size("lender").unwrap().size.unwrap();
        // Two disks share the VM's 100 MiB/s; its one interface has 8 MiB/s each way.
        let disks: Vec<(String, u64)> = size.disks.iter().map(|d| (d.device.clone(), d.total_bytes_sec)).collect();
        assert_eq!(disks, vec![("vda".to_string(), 50 * 1_048_576), ("vdb".to_string(), 50 * 1_048_576)]);
        assert_eq!(size.interfaces.len(), 1);
        assert_eq!((size.interfaces[0].inbound_kib_s, size.interfaces[0].outbound_kib_s), (8192, 8192));
        assert_eq!(pb::ResizeEntry::from(&r).disk_bytes_per_s, Some(100.0 * mib), "the record reports the limit");
        // A later resize that says nothing of the limits keeps them, across a restart.
        drop(desk);
        let mut desk = SizingDesk::open(store, Allocation::new(4.0, 8192.0), 0.0).unwrap();
        let r = desk.resize(&ResizeAsk::new("lender", Allocation::new(0.5, 1024.0), "operator"), &vms, 0, &h).unwrap();
        assert_eq!(r.io.disk_bytes_per_s, Some(100.0 * mib), "{r:?}");
        // 0 removes one; the other stays.
        let ask = ResizeAsk {
            io: IoLimits { disk_bytes_per_s: Some(0.0), net_bytes_per_s: None },
            ..ResizeAsk::new("lender", Allocation::new(0.5, 1024.0), "operator")
        };
        desk.resize(&ask, &vms, 0, &h).unwrap();
        let size = h.read_size("lender").unwrap().size.unwrap();
        assert!(size.disks.iter().all(|d| d.total_bytes_sec == 0), "{:?}", size.disks);
        assert_eq!(size.interfaces[0].inbound_kib_s, 8192);
        // Not a rate: refused, naming it; nothing recorded.
        let bad = ResizeAsk {
            io: IoLimits { disk_bytes_per_s: Some(f64::NAN), net_bytes_per_s: None },
            ..ResizeAsk::new("lender", Allocation::new(0.5, 1024.0), "operator")
        };
        let e = desk.resize(&bad, &vms, 0, &h).unwrap_err().to_string();
        assert!(e.contains("disk_bytes_per_s"), "{e}");
        assert_eq!(desk.resizes().find(|r| r.vm_id == "lender").unwrap().io.disk_bytes_per_s, Some(0.0));
        // A VM whose interface has no target (user-mode networking) cannot take a network
        // limit: the record says so.
        let mut bare = views(None);
        bare[1].interfaces.clear();
        let ask = ResizeAsk {
            io: IoLimits { disk_bytes_per_s: None, net_bytes_per_s: Some(8.0 * mib) },
            ..ResizeAsk::new("borrower", Allocation::new(1.0, 800.0), "operator")
        };
        let r = desk.resize(&ask, &bare, 0, &h).unwrap();
        assert!(r.message.contains("no interface"), "{r:?}");
        assert!(h.read_size("borrower").unwrap().size.unwrap().interfaces.is_empty());
    }

    #[test]
    fn a_borrower_cannot_grow_its_own_allocation_past_its_domain_with_what_it_borrows() {
        let dir = tempfile::tempdir().unwrap();
        let (h, store) = fixture(dir.path());
        let mut desk = SizingDesk::open(store, Allocation::new(4.0, 8192.0), 0.0).unwrap();
        let mut vms = views(Some(0.2));
        vms[1].allocated.cpu_cores = 0.5; // the borrower holds half its vCPU ...
        desk.grant(lease(60_000), &vms, Allocation::new(2.0, 0.0), 0, &h).unwrap(); // ... and borrows the other half
        let e = desk.resize(&ResizeAsk::new("borrower", Allocation::new(1.0, 1024.0), "operator"), &vms, 0, &h).unwrap_err();
        assert!(e.to_string().contains("domain's maximum"), "{e}");
        // Within what the lease leaves, it may (memory within the simulated domain's 870 MiB).
        let r = desk.resize(&ResizeAsk::new("borrower", Allocation::new(0.5, 800.0), "operator"), &vms, 0, &h).unwrap();
        assert_eq!(r.status, ResizeStatus::Done, "{r:?}");
    }
}
