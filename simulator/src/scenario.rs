//! Scenarios: the hosts and VMs of a replay, built from a trace folder.
//!
//! - PlanetLab ([`Scenario::planetlab`]): CloudSim's experiment. 800 hosts alternating HP
//!   ProLiant ML110 G4 (2 × 1860 MIPS) and G5 (2 × 2660 MIPS), 4 GB RAM, 1 Gbit/s (migrations
//!   at 62.5 MB/s); one single-core VM per trace file, sized by CloudSim's four types in the order
//!   of `vm_order/DAY.csv` when given; demand = trace percent × VM MIPS.
//! - Bitbrains ([`Scenario::bitbrains`]): CPU and memory. Hosts are IBM System x3550 M3 servers
//!   (2 × Xeon X5675: 12 cores × 3067 MHz, SPECpower curve as CloudSim ships it) with 64 GB of
//!   RAM, a usual configuration of that server, and 10 Gbit/s networking (migrations at 625 MB/s,
//!   half the NIC as in CloudSim). A VM's capacity is its provisioned cores × MHz (at most the
//!   host's 12 cores: KVM time-shares the extra vCPUs); it is created at that size, like
//!   CloudSim's VMs; its demand is the trace's CPU MHz, its memory need what it uses, and a
//!   migration copies the memory in use. The trace files start at different times; each VM
//!   replays its own series from step 0 and ends with its trace. The replay lasts the median
//!   trace length unless told otherwise.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use presage_traces::{Selection, TraceError, TraceFormat, VmOrder};

use super::{OracleFleet, ResourceModel, SimVm};
use presage_decide::policy::power::{HP_ML110_G4, HP_ML110_G5, IBM_X3550_M3_X5675};
use presage_decide::policy::{HostView, VmView};

/// The scheduling interval, seconds.
pub const STEP_S: f64 = 300.0;
/// Cores of the Bitbrains replay's hosts.
pub const BITBRAINS_HOST_CORES: u32 = 12;
/// CloudSim's PlanetLab experiment size.
pub const PLANETLAB_HOSTS: usize = 800;

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("{order}: lists {file:?}, which is not in {dir}")]
    OrderFileMissing { order: PathBuf, file: String, dir: PathBuf },
    #[error("{dir}: {what}")]
    Invalid { dir: PathBuf, what: String },
}

/// A replay: hosts, VMs with their demand series, and the model they run under.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The trace folder's name (a PlanetLab day).
    pub name: String,
    pub model: ResourceModel,
    pub step_s: f64,
    /// Trace points per VM.
    pub steps: usize,
    pub hosts: Vec<HostView>,
    pub vm_views: Vec<VmView>,
    pub vms: Vec<SimVm>,
    /// The order in which VMs are created: VM-id order for CloudSim's experiment, largest
    /// first (best-fit decreasing) for the multi-resource replay.
    pub creation_order: Vec<usize>,
    pub oracle: OracleFleet,
}

/// CloudSim's host list: host `i` is a G4 when `i` is even, a G5 when odd.
pub fn cloudsim_hosts(n: usize) -> Vec<HostView> {
    (0..n)
        .map(|i| {
            if i % 2 == 0 {
                HostView::new(2, 1860.0, 4096.0, 62.5, HP_ML110_G4)
            } else {
                HostView::new(2, 2660.0, 4096.0, 62.5, HP_ML110_G5)
            }
        })
        .collect()
}

impl Scenario {
    /// A scenario built in code: `vms` pairs a VM's shape with its demand per step as a
    /// fraction of its capacity (all series of length `steps`).
    pub fn synthetic(name: &str, model: ResourceModel, hosts: Vec<HostView>, vms: Vec<(VmView, Vec<f64>)>) -> Scenario {
        let steps = vms.iter().map(|(_, s)| s.len()).max().unwrap_or(0);
        let mut views = Vec::new();
        let mut sims = Vec::new();
        for (i, (view, mut cpu)) in vms.into_iter().enumerate() {
            let end = cpu.len();
            let last = cpu.last().copied().unwrap_or(0.0);
            cpu.resize(steps, 0.0);
            cpu.push(last);
            let memory_mb = vec![view.ram_mb; steps];
            sims.push(SimVm {
                name: format!("vm{i}"),
                cpu,
                memory_mb,
                end_step: end,
                create_memory_mb: view.ram_mb,
                memory_provisioned_mb: view.ram_mb,
            });
            views.push(view);
        }
        let creation_order = (0..sims.len()).collect();
        Scenario::assemble(name.into(), model, steps, hosts, views, sims, creation_order)
    }

    fn assemble(
        name: String,
        model: ResourceModel,
        steps: usize,
        hosts: Vec<HostView>,
        vm_views: Vec<VmView>,
        vms: Vec<SimVm>,
        creation_order: Vec<usize>,
    ) -> Scenario {
        Scenario { name, model, step_s: STEP_S, steps, oracle: OracleFleet::new(&hosts), hosts, vm_views, vms, creation_order }
    }

    /// CloudSim's PlanetLab experiment over one day's folder.
    pub fn planetlab(dir: &Path, vm_order: Option<&Path>, hosts: usize) -> Result<Scenario, ScenarioError> {
        let order = vm_order.map(VmOrder::load).transpose()?;
        let set = presage_traces::load_dir(dir, Some(TraceFormat::PlanetLab), Selection::default(), order.as_ref())?;
        let mut traces = set.vms;
        if let (Some(order), Some(path)) = (order.as_ref(), vm_order) {
            // CloudSim's VM ids follow the order file, not the file names.
            let mut by_name: HashMap<String, presage_traces::VmTrace> = traces.into_iter().map(|t| (t.name.clone(), t)).collect();
            let mut ordered = Vec::with_capacity(by_name.len());
            for file in order.files() {
                let t = by_name.remove(file).ok_or_else(|| ScenarioError::OrderFileMissing {
                    order: path.into(),
                    file: file.to_string(),
                    dir: dir.into(),
                })?;
                ordered.push(t);
            }
            ordered.extend(by_name.into_values());
            traces = ordered;
        }
        let steps = traces.iter().map(|t| t.len()).max().unwrap_or(0);
        if steps < 2 {
            return Err(ScenarioError::Invalid { dir: dir.into(), what: "the traces need at least two samples".into() });
        }
        let mut vms = Vec::with_capacity(traces.len());
        let mut views = Vec::with_capacity(traces.len());
        for t in &traces {
            // Integer percents, divided the way CloudSim divides them.
            let mut cpu: Vec<f64> = t.cpu_series().iter().map(|x| ((*x as f64) * 100.0).round() / 100.0).collect();
            let last = *cpu.last().unwrap_or(&0.0);
            if cpu.len() == steps {
                cpu.push(last);
            }
            cpu.resize(steps + 1, 0.0);
            let ram_mb = (t.spec.memory_bytes >> 20) as f64;
            views.push(VmView::unplaced(t.spec.vcpus, t.spec.cpu_mhz_per_core, ram_mb));
            vms.push(SimVm {
                name: t.name.clone(),
                cpu,
                memory_mb: Vec::new(),
                end_step: t.len(),
                create_memory_mb: ram_mb,
                memory_provisioned_mb: ram_mb,
            });
        }
        let order = (0..vms.len()).collect();
        Ok(Scenario::assemble(set.name, ResourceModel::CloudSimCpu, steps, cloudsim_hosts(hosts), views, vms, order))
    }

    /// The Bitbrains multi-resource replay: `hosts` servers (default: one per four VMs), at
    /// most `max_steps` trace points (default: the median trace length).
    pub fn bitbrains(dir: &Path, hosts: Option<usize>, max_steps: Option<usize>) -> Result<Scenario, ScenarioError> {
        Scenario::bitbrains_from(dir, hosts, 0, max_steps)
    }

    /// [`bitbrains`](Self::bitbrains) from step `first` of the traces on (a later part of the
    /// month, such as a week held back from training): the replay starts there with no history.
    pub fn bitbrains_from(dir: &Path, hosts: Option<usize>, first: usize, max_steps: Option<usize>) -> Result<Scenario, ScenarioError> {
        let set = presage_traces::load_dir(dir, Some(TraceFormat::Bitbrains), Selection::default(), None)?;
        let mut lengths: Vec<usize> = set.vms.iter().map(|t| t.len().saturating_sub(first)).collect();
        lengths.sort_unstable();
        let longest = lengths.last().copied().unwrap_or(0);
        let median = lengths.get(lengths.len() / 2).copied().unwrap_or(0);
        let steps = max_steps.map_or(median, |m| m.min(longest));
        if steps < 2 {
            let what = if first > 0 {
                format!("the traces need at least two samples from step {first} on")
            } else {
                "the traces need at least two samples".into()
            };
            return Err(ScenarioError::Invalid { dir: dir.into(), what });
        }
        let mut vms = Vec::new();
        let mut views = Vec::new();
        for t in &set.vms {
            let provisioned = t.spec.vcpus.max(1);
            let vcpus = provisioned.min(BITBRAINS_HOST_CORES);
            let scale = provisioned as f64 / vcpus as f64;
            let mhz = if t.spec.cpu_mhz_per_core > 0.0 { t.spec.cpu_mhz_per_core } else { 2600.0 };
            let n = t.len().saturating_sub(first).min(steps);
            let at = |s: usize| t.usage((first + s) as u64);
            let mut cpu: Vec<f64> = (0..n).map(|s| (at(s).cpu_utilisation * scale).clamp(0.0, 1.0)).collect();
            let memory_mb: Vec<f64> = (0..n).map(|s| at(s).memory_used_bytes.unwrap_or(0) as f64 / (1024.0 * 1024.0)).collect();
            cpu.resize(steps + 1, 0.0);
            let first_mem = memory_mb.first().copied().unwrap_or(0.0);
            views.push(VmView::unplaced(vcpus, mhz, first_mem.max(1.0)));
            vms.push(SimVm {
                name: t.name.clone(),
                cpu,
                memory_mb,
                end_step: n,
                create_memory_mb: first_mem,
                memory_provisioned_mb: (t.spec.memory_bytes >> 20) as f64,
            });
        }
        let count = hosts.unwrap_or_else(|| vms.len().div_ceil(4)).max(1);
        let hosts: Vec<HostView> =
            (0..count).map(|_| HostView::new(BITBRAINS_HOST_CORES, 3067.0, 64.0 * 1024.0, 625.0, IBM_X3550_M3_X5675)).collect();
        let mut creation_order: Vec<usize> = (0..views.len()).collect();
        creation_order.sort_by(|a, b| views[*b].capacity_mips().total_cmp(&views[*a].capacity_mips()));
        Ok(Scenario::assemble(set.name, ResourceModel::CpuAndMemory, steps, hosts, views, vms, creation_order))
    }
}
