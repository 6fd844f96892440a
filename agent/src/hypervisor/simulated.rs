//! A simulated hypervisor whose VMs replay real utilisation traces (PlanetLab or Bitbrains), with
//! time compressed by a configurable factor. It lets a whole cluster run on one machine for the
//! demo, the tests and scale experiments; the agent around it is the real one.
//!
//! Host model: unless configured, the host has CPU cores of CloudSim's HP ProLiant ML110 G5 speed
//! (2660 MIPS; PlanetLab demand is in MIPS) or, for Bitbrains, of the fastest VM's per-core MHz,
//! in the number needed to hold every VM at full demand, and the VMs' memory plus 25 %. VMs whose
//! trace has no memory column (PlanetLab) are reported as using their whole allocation, which is
//! what the host commits to them.

use std::path::PathBuf;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use std::sync::Arc;

use presage_protocol::pb::{HostCapacity, HostUsage, SimulatedVm, TracePosition, VmPresence, VmSample, VmSize, VmSizeReadback, VmState};
use presage_traces::{Selection, TraceFormat, TraceSet, VmSpec};
use prost::Message;

use super::{Hypervisor, HypervisorError, MigrationProgress, MigrationTarget, Observation, ProgressSink, StartedSink};
use crate::config::SimulatedConfig;
use crate::store::{KvStore, KvTree, Order};

/// The store tree where a simulated host keeps which VMs it adopted and which it let go, so a
/// restarted agent replays the same VMs (a real host's VMs survive an agent restart too).
pub const MEMBERSHIP_TREE: &str = "simulated-membership";

/// Memory copy rate of a simulated migration, MB/s of trace time (a 1 Gbit/s link).
pub const DEFAULT_MIGRATION_MB_PER_S: f64 = 125.0;

/// Per-core speed of CloudSim's G5 host (MIPS).
pub const G5_MIPS_PER_CORE: f64 = 2660.0;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Flight {
    aborted: bool,
    handed_over: bool,
}

pub struct SimulatedHypervisor {
    /// The VMs this host replays now: its shard at start, then as VMs migrate in and out.
    traces: RwLock<TraceSet>,
    /// The trace folder every simulated host of the cluster reads (where adopted VMs' files are).
    trace_dir: PathBuf,
    capacity: HostCapacity,
    time_compression: f64,
    migration_mb_per_s: f64,
    faults: crate::config::SimulatedFaults,
    /// Migrations away from here in progress, by VM: aborted, or copied and waiting to complete
    /// (the VM is paused here then: not replayed, not reported).
    flights: std::sync::Mutex<std::collections::HashMap<String, Flight>>,
    /// Set when the agent stops: copies in progress give up.
    closing: std::sync::atomic::AtomicBool,
    start_step: u64,
    started: Instant,
    /// Where adoptions and departures are recorded (none: not persisted).
    membership: Option<(Arc<dyn KvStore>, Arc<dyn KvTree>)>,
    /// Incoming instances of VMs this host refused to adopt, and until when they are held
    /// (the `linger_incoming` fault).
    lingering: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
    /// Sizes set by resizes, per VM (a VM not here has its trace's size and no limits). A
    /// quota below the trace's demand caps the CPU the VM is reported to use, as CFS would.
    sizes: std::sync::Mutex<std::collections::HashMap<String, VmSize>>,
}

impl SimulatedHypervisor {
    /// Loads this host's share of the trace folder described by `cfg`.
    pub fn load(cfg: &SimulatedConfig) -> Result<SimulatedHypervisor, HypervisorError> {
        let format = cfg
            .format
            .as_deref()
            .map(|f| f.parse::<TraceFormat>())
            .transpose()
            .map_err(|e| HypervisorError::Trace(presage_traces::TraceError::UnknownFormat { dir: cfg.trace_dir.clone(), why: e }))?;
        let selection = Selection { index: cfg.shard_index, count: cfg.shard_count, limit: cfg.max_vms };
        let traces = presage_traces::load_dir(&cfg.trace_dir, format, selection, None)?;
        Ok(Self::from_traces(traces, cfg))
    }

    pub fn from_traces(traces: TraceSet, cfg: &SimulatedConfig) -> SimulatedHypervisor {
        let demand: f64 = traces.vms.iter().map(|v| v.spec.vcpus as f64 * v.spec.cpu_mhz_per_core).sum();
        let per_core = cfg.cpu_mhz_per_core.unwrap_or(match traces.format {
            TraceFormat::PlanetLab => G5_MIPS_PER_CORE,
            TraceFormat::Bitbrains => traces.vms.iter().map(|v| v.spec.cpu_mhz_per_core).fold(1.0, f64::max),
        });
        let share = cfg.cpu_fraction.unwrap_or(1.0);
        let cores = cfg.cpu_cores.unwrap_or_else(|| ((demand * share / per_core).ceil() as u32).max(2));
        let memory = cfg.memory_mb.map(|m| m << 20).unwrap_or_else(|| {
            // The VMs' allocations plus a quarter for the hypervisor and headroom.
            let sum: u64 = traces.vms.iter().map(|v| v.spec.memory_bytes).sum();
            (sum + sum / 4).div_ceil(1 << 30).max(4) << 30
        });
        let nic_mbit_s = cfg.nic_mbit_s.unwrap_or_else(|| {
            let peaks: f64 = traces.vms.iter().map(|v| v.peak_net_bytes_per_s()).sum();
            ((peaks * 8.0 / 1e6).ceil() as u64).max(1000)
        });
        let capacity = HostCapacity {
            cpu_cores: cores,
            cpu_mhz_per_core: per_core,
            memory_bytes: memory,
            nics: vec![presage_protocol::pb::Nic { name: "sim0".into(), speed_mbps: nic_mbit_s }],
            disk_bytes_per_s: traces.vms.iter().map(|v| v.peak_disk_bytes_per_s()).sum(),
            cpu_model: format!("simulated ({} trace {})", traces.format.name(), traces.name),
        };
        SimulatedHypervisor {
            traces: RwLock::new(traces),
            trace_dir: cfg.trace_dir.clone(),
            capacity,
            time_compression: cfg.time_compression,
            migration_mb_per_s: cfg.migration_mb_per_s.unwrap_or(DEFAULT_MIGRATION_MB_PER_S),
            faults: cfg.faults.clone(),
            flights: Default::default(),
            closing: Default::default(),
            start_step: cfg.start_step,
            started: Instant::now(),
            membership: None,
            lingering: Default::default(),
            sizes: Default::default(),
        }
    }

    /// Records adoptions and departures in `store` from now on, after replaying the ones
    /// recorded by an earlier run of the agent: VMs it let go are dropped from its shard, VMs
    /// it adopted are taken back.
    pub fn with_membership(mut self, store: Arc<dyn KvStore>) -> Result<SimulatedHypervisor, HypervisorError> {
        let io = |e: crate::store::StoreError| HypervisorError::Migration(format!("simulated membership store: {e}"));
        let tree = store.tree(MEMBERSHIP_TREE).map_err(io)?;
        let left: Vec<String> = tree
            .scan_prefix(b"left/", Order::Ascending, usize::MAX)
            .map_err(io)?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k[5..]).into_owned())
            .collect();
        self.traces.get_mut().unwrap_or_else(|p| p.into_inner()).vms.retain(|v| !left.contains(&v.name));
        for (k, v) in tree.scan_prefix(b"adopted/", Order::Ascending, usize::MAX).map_err(io)? {
            match SimulatedVm::decode(&v[..]) {
                Ok(vm) => {
                    if let Err(e) = self.adopt(&vm) {
                        tracing::warn!(vm = %vm.vm_id, error = %e, "a VM adopted before the restart cannot be replayed");
                    }
                }
                Err(e) => tracing::warn!(key = %String::from_utf8_lossy(&k), error = %e, "damaged membership entry left in place"),
            }
        }
        self.membership = Some((store, tree));
        Ok(self)
    }

    /// Records that `vm` runs here now (`Some`) or left for good (`None`), durably.
    fn record(&self, vm_id: &str, adopted: Option<&SimulatedVm>) -> Result<(), HypervisorError> {
        let Some((store, tree)) = &self.membership else { return Ok(()) };
        let io = |e: crate::store::StoreError| HypervisorError::Migration(format!("recording {vm_id}'s move: {e}"));
        let (adopted_key, left_key) = (format!("adopted/{vm_id}").into_bytes(), format!("left/{vm_id}").into_bytes());
        let ops = match adopted {
            Some(vm) => vec![crate::store::BatchOp::Insert(adopted_key, vm.encode_to_vec()), crate::store::BatchOp::Remove(left_key)],
            None => vec![crate::store::BatchOp::Remove(adopted_key), crate::store::BatchOp::Insert(left_key, Vec::new())],
        };
        tree.apply(ops).map_err(io)?;
        store.flush().map_err(io)
    }

    /// Whether this host still holds the incoming instance of a VM it refused (the
    /// `linger_incoming` fault); an instance whose time is up is let go.
    fn lingers(&self, vm_id: &str) -> bool {
        let mut lingering = self.lingering.lock().unwrap_or_else(|p| p.into_inner());
        match lingering.get(vm_id) {
            Some(until) if Instant::now() < *until => true,
            Some(_) => {
                lingering.remove(vm_id);
                false
            }
            None => false,
        }
    }

    pub fn vm_count(&self) -> usize {
        self.read().vms.len()
    }

    fn flights(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Flight>> {
        self.flights.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, TraceSet> {
        self.traces.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The trace line that is current `elapsed` after the hypervisor started.
    pub fn step_at(&self, elapsed: Duration) -> u64 {
        let trace_seconds = elapsed.as_secs_f64() * self.time_compression;
        self.start_step + (trace_seconds / self.read().step_seconds() as f64) as u64
    }

    /// The observation at a given trace step (what [`Hypervisor::observe`] returns at that time).
    pub fn observe_step(&self, step: u64) -> Observation {
        let mut host = HostUsage::default();
        let mut cpu_used = 0.0;
        let traces = self.read();
        let paused: std::collections::HashSet<String> =
            self.flights().iter().filter(|(_, f)| f.handed_over).map(|(v, _)| v.clone()).collect();
        let sizes = self.sizes.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let vms = traces
            .vms
            .iter()
            .filter(|vm| !paused.contains(&vm.name))
            .map(|vm| {
                let mut u = vm.usage(step);
                let size = sizes.get(&vm.name);
                // A quota caps the CPU time it gets; a balloon caps the memory it holds; disk
                // and interface limits cap its I/O and traffic.
                if let Some(q) = size.and_then(|s| s.cpu_quota_cores) {
                    u.cpu_utilisation = u.cpu_utilisation.min(q / vm.spec.vcpus.max(1) as f64);
                }
                if let Some(s) = size {
                    cap_io(&mut u, s);
                }
                let memory_bytes = size.and_then(|s| s.memory_mib).map_or(vm.spec.memory_bytes, |m| m << 20);
                let memory_used = u.memory_used_bytes.unwrap_or(vm.spec.memory_bytes).min(memory_bytes);
                cpu_used += u.cpu_utilisation * vm.spec.vcpus as f64 * vm.spec.cpu_mhz_per_core;
                host.memory_used_bytes += memory_used;
                host.load_avg_1m += u.cpu_utilisation * vm.spec.vcpus as f64;
                host.net_rx_bytes_per_s += u.net_rx_bytes_per_s;
                host.net_tx_bytes_per_s += u.net_tx_bytes_per_s;
                VmSample {
                    vm_id: vm.name.clone(),
                    name: vm.name.clone(),
                    state: VmState::Running as i32,
                    vcpus: vm.spec.vcpus,
                    memory_bytes,
                    cpu_utilisation: u.cpu_utilisation,
                    memory_used_bytes: memory_used,
                    disk_read_bytes_per_s: u.disk_read_bytes_per_s,
                    disk_write_bytes_per_s: u.disk_write_bytes_per_s,
                    net_rx_bytes_per_s: u.net_rx_bytes_per_s,
                    net_tx_bytes_per_s: u.net_tx_bytes_per_s,
                    vcpu_mhz: vm.spec.cpu_mhz_per_core,
                    disk_devices: vec![SIMULATED_DISK.into()],
                    interface_devices: vec![SIMULATED_INTERFACE.into()],
                    forecast: None,
                    ..VmSample::default()
                }
            })
            .collect();
        let total = self.capacity.cpu_cores as f64 * self.capacity.cpu_mhz_per_core;
        host.cpu_utilisation = (cpu_used / total).min(1.0);
        Observation {
            vms,
            host_usage: Some(host),
            trace: Some(TracePosition { trace_set: traces.name.clone(), step, step_seconds: traces.step_seconds() }),
        }
    }
}

/// Every simulated VM's one disk and one interface.
pub const SIMULATED_DISK: &str = "vda";
pub const SIMULATED_INTERFACE: &str = "vnet0";

/// Caps a step's disk and network rates at the limits `size` sets (0: none): reads and writes
/// scaled down together to the disk's total, each direction to its interface's.
fn cap_io(u: &mut presage_traces::Usage, size: &VmSize) {
    let disk: u64 = size.disks.iter().map(|d| d.total_bytes_sec).sum();
    let both = u.disk_read_bytes_per_s + u.disk_write_bytes_per_s;
    if disk > 0 && both > disk as f64 {
        let f = disk as f64 / both;
        u.disk_read_bytes_per_s *= f;
        u.disk_write_bytes_per_s *= f;
    }
    let cap = |kib: u64, rate: &mut f64| {
        if kib > 0 {
            *rate = rate.min(kib as f64 * 1024.0);
        }
    };
    cap(size.interfaces.iter().map(|i| i.inbound_kib_s).sum(), &mut u.net_rx_bytes_per_s);
    cap(size.interfaces.iter().map(|i| i.outbound_kib_s).sum(), &mut u.net_tx_bytes_per_s);
}

/// The longest a simulated copy takes in real time, well inside the coordinator's wait for a
/// migration (so a copy never outlives the move that asked for it).
pub const MAX_COPY_SECONDS: f64 = 60.0;

/// Real seconds a simulated copy of `memory_bytes` takes.
fn vm_copy_seconds(memory_bytes: u64, mb_per_s: f64, time_compression: f64) -> f64 {
    (memory_bytes as f64 / 1e6 / mb_per_s / time_compression.max(1e-9)).min(MAX_COPY_SECONDS)
}

impl Hypervisor for SimulatedHypervisor {
    fn kind(&self) -> &'static str {
        "simulated"
    }

    fn capacity(&self) -> Result<HostCapacity, HypervisorError> {
        Ok(self.capacity.clone())
    }

    fn observe(&self) -> Result<Observation, HypervisorError> {
        Ok(self.observe_step(self.step_at(self.started.elapsed())))
    }

    fn migrate_out(
        &self,
        vm_id: &str,
        target: &MigrationTarget,
        started: StartedSink<'_>,
        progress: ProgressSink<'_>,
    ) -> Result<Option<SimulatedVm>, HypervisorError> {
        let destination_host = &target.host;
        let err = |why: String| Err(HypervisorError::Migration(format!("moving {vm_id} to {destination_host}: {why}")));
        let (spec, copy) = {
            let traces = self.read();
            let Some(vm) = traces.vms.iter().find(|v| v.name == vm_id) else {
                return Err(HypervisorError::Precheck(format!("moving {vm_id} to {destination_host}: it does not run here")));
            };
            (vm.spec, vm_copy_seconds(vm.spec.memory_bytes, self.migration_mb_per_s, self.time_compression))
        };
        {
            let mut flights = self.flights();
            if flights.contains_key(vm_id) {
                return Err(HypervisorError::Precheck(format!(
                    "moving {vm_id} to {destination_host}: a migration of it is already in progress"
                )));
            }
            flights.insert(vm_id.to_string(), Flight::default());
        }
        started();
        // The copy: the VM keeps running here meanwhile. Checked every 20 ms for an abort and
        // for the injected faults.
        let started = Instant::now();
        let mut reported = Instant::now();
        loop {
            let done = if self.faults.hang_migrations { 0.0 } else { started.elapsed().as_secs_f64() / copy.max(1e-9) };
            if reported.elapsed() >= Duration::from_secs(1) {
                reported = Instant::now();
                let processed = (spec.memory_bytes as f64 * done.min(1.0)) as u64;
                let elapsed_ms = started.elapsed().as_millis() as u64;
                progress(MigrationProgress {
                    elapsed_ms,
                    data_total: spec.memory_bytes,
                    data_processed: processed,
                    data_remaining: spec.memory_bytes - processed,
                    bytes_per_s: (processed * 1000).checked_div(elapsed_ms).unwrap_or(0),
                });
            }
            if self.closing.load(std::sync::atomic::Ordering::Relaxed) {
                self.flights().remove(vm_id);
                return err("the agent is stopping; it keeps running here".into());
            }
            if self.flights().get(vm_id).is_some_and(|f| f.aborted) {
                self.flights().remove(vm_id);
                return err("aborted; it keeps running here".into());
            }
            let fail_at = if self.faults.fail_vms.iter().any(|v| v == vm_id) { Some(0.5) } else { self.faults.fail_migration_at };
            if let Some(at) = fail_at
                && done >= at
            {
                self.flights().remove(vm_id);
                return err(format!("the copy failed at {:.0} % (injected fault); it keeps running here", at * 100.0));
            }
            if done >= 1.0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20).min(Duration::from_secs_f64(copy.max(0.001))));
        }
        // Copied: paused here until the destination runs it (complete) or the move is abandoned (abort).
        self.flights().entry(vm_id.to_string()).or_default().handed_over = true;
        Ok(Some(SimulatedVm {
            vm_id: vm_id.to_string(),
            vcpus: spec.vcpus,
            cpu_mhz_per_core: spec.cpu_mhz_per_core,
            memory_bytes: spec.memory_bytes,
        }))
    }

    fn shutdown(&self) {
        self.closing.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Lets go of `vm_id` for good: the destination runs it. After an agent restart the copy's
    /// state is gone but the VM is replayed here again; completing lets go of it all the same,
    /// so a move the coordinator saw adopted never leaves the VM on two hosts. A VM still being
    /// copied is not let go.
    fn complete_migration(&self, vm_id: &str) -> Result<(), HypervisorError> {
        if self.flights().get(vm_id).is_some_and(|f| !f.handed_over) {
            return Err(HypervisorError::Migration(format!("completing {vm_id}: it is still being copied")));
        }
        self.record(vm_id, None)?;
        let mut traces = self.traces.write().unwrap_or_else(|p| p.into_inner());
        traces.vms.retain(|v| v.name != vm_id);
        self.flights().remove(vm_id);
        Ok(())
    }

    fn inspect(&self, vm_id: &str) -> Result<VmPresence, HypervisorError> {
        let present = self.read().vms.iter().any(|v| v.name == vm_id);
        let flight = self.flights().get(vm_id).copied();
        let paused = flight.is_some_and(|f| f.handed_over);
        let incoming = !present && self.lingers(vm_id);
        Ok(VmPresence {
            vm_id: vm_id.into(),
            present: present || incoming,
            running: present && !paused,
            migrating: flight.is_some(),
            state: if incoming {
                "paused"
            } else if !present {
                "absent"
            } else if paused {
                "paused"
            } else {
                "running"
            }
            .into(),
            incoming,
        })
    }

    /// Sets the simulated VM's size: vCPUs and memory up to its trace's (its domain's maximum),
    /// a CPU quota that caps what it is reported to use, shares and limits as given. Checked
    /// whole before anything changes, so nothing is half-applied.
    fn resize(&self, vm_id: &str, size: &VmSize) -> Result<VmSizeReadback, HypervisorError> {
        let before = self.read_size(vm_id)?;
        size.check(before.max_vcpus, before.max_memory_mib)
            .map_err(|why| HypervisorError::Resize(format!("resizing {vm_id}: {why}; nothing was changed")))?;
        let mut sizes = self.sizes.lock().unwrap_or_else(|p| p.into_inner());
        let now = sizes.entry(vm_id.to_string()).or_insert_with(|| before.size.clone().unwrap_or_default());
        if size.vcpus.is_some() {
            now.vcpus = size.vcpus;
        }
        if size.memory_mib.is_some() {
            now.memory_mib = size.memory_mib;
        }
        if size.cpu_shares.is_some() {
            now.cpu_shares = size.cpu_shares;
        }
        if size.cpu_quota_cores.is_some() {
            now.cpu_quota_cores = size.cpu_quota_cores.filter(|c| *c > 0.0);
        }
        for d in &size.disks {
            now.disks.retain(|o| o.device != d.device);
            now.disks.push(d.clone());
        }
        for i in &size.interfaces {
            now.interfaces.retain(|o| o.device != i.device);
            now.interfaces.push(i.clone());
        }
        drop(sizes);
        self.read_size(vm_id)
    }

    fn read_size(&self, vm_id: &str) -> Result<VmSizeReadback, HypervisorError> {
        let spec = self
            .read()
            .vms
            .iter()
            .find(|v| v.name == vm_id)
            .map(|v| v.spec)
            .ok_or_else(|| HypervisorError::Resize(format!("no VM {vm_id} here")))?;
        let max_memory_mib = spec.memory_bytes >> 20;
        let size = self.sizes.lock().unwrap_or_else(|p| p.into_inner()).get(vm_id).cloned().unwrap_or(VmSize {
            vcpus: Some(spec.vcpus),
            memory_mib: Some(max_memory_mib),
            ..VmSize::default()
        });
        Ok(VmSizeReadback {
            vm_id: vm_id.into(),
            balloon_actual_mib: size.memory_mib,
            size: Some(size),
            max_vcpus: spec.vcpus,
            max_memory_mib,
        })
    }

    fn abort_migration(&self, vm_id: &str) -> Result<(), HypervisorError> {
        let mut flights = self.flights();
        match flights.get_mut(vm_id) {
            // Copied and paused: it resumes here.
            Some(f) if f.handed_over => {
                flights.remove(vm_id);
            }
            // Copying: the copy loop sees the flag and stops.
            Some(f) => f.aborted = true,
            None => {}
        }
        Ok(())
    }

    fn adopt(&self, vm: &SimulatedVm) -> Result<(), HypervisorError> {
        let bad = |why: String| Err(HypervisorError::Migration(format!("adopting {}: {why}", vm.vm_id)));
        if self.faults.refuse_adopt {
            if let Some(linger) = self.faults.linger_incoming {
                self.lingering.lock().unwrap_or_else(|p| p.into_inner()).insert(vm.vm_id.clone(), Instant::now() + linger);
            }
            return bad("this host refuses (injected fault: a destination that died)".into());
        }
        if vm.vm_id.is_empty() || vm.vm_id.contains('/') || vm.vm_id.starts_with('.') {
            return bad("not a trace file name".into());
        }
        if self.read().vms.iter().any(|v| v.name == vm.vm_id) {
            return bad("it already runs here".into());
        }
        let format = self.read().format;
        let trace = match format {
            TraceFormat::PlanetLab => {
                let spec = VmSpec { vcpus: vm.vcpus.max(1), cpu_mhz_per_core: vm.cpu_mhz_per_core, memory_bytes: vm.memory_bytes };
                presage_traces::read_planetlab(&self.trace_dir.join(&vm.vm_id), vm.vm_id.clone(), spec)?
            }
            TraceFormat::Bitbrains => {
                let gz = self.trace_dir.join(format!("{}.csv.gz", vm.vm_id));
                let path = if gz.is_file() { gz } else { self.trace_dir.join(format!("{}.csv", vm.vm_id)) };
                presage_traces::read_bitbrains(&path, vm.vm_id.clone())?
            }
        };
        let mut traces = self.traces.write().unwrap_or_else(|p| p.into_inner());
        if traces.vms.iter().any(|v| v.name == vm.vm_id) {
            return bad("it already runs here".into());
        }
        self.record(&vm.vm_id, Some(vm))?;
        traces.vms.push(trace);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> MigrationTarget {
        MigrationTarget { host: "dst".into(), ..Default::default() }
    }

    fn cfg(dir: &std::path::Path) -> SimulatedConfig {
        SimulatedConfig { start_step: 2, ..SimulatedConfig::replaying(dir) }
    }

    #[test]
    fn replays_trace_lines_and_sums_the_host() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), "10\n20\n30\n40\n").unwrap();
        std::fs::write(d.path().join("b"), "0\n0\n50\n100\n").unwrap();
        let h = SimulatedHypervisor::load(&cfg(d.path())).unwrap();
        // 60x compression: one 300 s step per 5 real seconds, starting at step 2.
        assert_eq!(h.step_at(Duration::from_secs(4)), 2);
        assert_eq!(h.step_at(Duration::from_secs(5)), 3);
        let o = h.observe_step(3);
        assert_eq!(o.vms[0].cpu_utilisation, 0.4f32 as f64);
        assert_eq!(o.vms[1].cpu_utilisation, 1.0);
        assert_eq!(o.trace.as_ref().unwrap().step, 3);
        // Two files: CloudSim blocks of ceil(2/4)=1 -> a is 2500 MIPS, b is 2000 MIPS.
        let cap = h.capacity().unwrap();
        assert_eq!(cap.cpu_cores, 2, "ceil((2500+2000)/2660)");
        let want = (0.4f32 as f64 * 2500.0 + 2000.0) / (2.0 * G5_MIPS_PER_CORE);
        assert!((o.host_usage.unwrap().cpu_utilisation - want).abs() < 1e-12);
        assert_eq!(h.observe_step(4).vms[0].cpu_utilisation, 0.1f32 as f64, "wraps after the last line");
    }

    #[test]
    fn a_quota_caps_the_cpu_a_vm_gets_and_a_bad_size_changes_nothing() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("b"), "0\n0\n50\n100\n").unwrap();
        let h = SimulatedHypervisor::load(&cfg(d.path())).unwrap();
        let vcpus = h.read_size("b").unwrap().max_vcpus as f64;
        assert_eq!(h.observe_step(3).vms[0].cpu_utilisation, 1.0);
        let after = h.resize("b", &VmSize { cpu_quota_cores: Some(vcpus / 4.0), memory_mib: Some(512), ..VmSize::default() }).unwrap();
        assert_eq!(after.size.as_ref().unwrap().memory_mib, Some(512));
        let o = h.observe_step(3);
        assert_eq!(o.vms[0].cpu_utilisation, 0.25, "the quota caps what it is reported to use");
        assert_eq!(o.vms[0].memory_bytes, 512 << 20);
        // Beyond the domain: refused whole.
        let e = h.resize("b", &VmSize { cpu_quota_cores: Some(vcpus), vcpus: Some(999), ..VmSize::default() }).unwrap_err().to_string();
        assert!(e.contains("vcpus 999") && e.contains("nothing was changed"), "{e}");
        assert_eq!(h.observe_step(3).vms[0].cpu_utilisation, 0.25);
        // Removing the quota gives it all back.
        h.resize("b", &VmSize { cpu_quota_cores: Some(0.0), ..VmSize::default() }).unwrap();
        assert_eq!(h.observe_step(3).vms[0].cpu_utilisation, 1.0);
        assert!(h.read_size("zz").unwrap_err().to_string().contains("no VM zz"));
    }

    #[test]
    fn a_vm_handed_over_replays_the_same_trace_on_its_new_host() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), "10\n20\n30\n40\n").unwrap();
        std::fs::write(d.path().join("b"), "0\n0\n50\n100\n").unwrap();
        let src = SimulatedHypervisor::load(&SimulatedConfig { shard_index: 0, shard_count: 2, ..cfg(d.path()) }).unwrap();
        let dst = SimulatedHypervisor::load(&SimulatedConfig { shard_index: 1, shard_count: 2, ..cfg(d.path()) }).unwrap();
        let before = src.observe_step(3).vms[0].clone();
        assert_eq!(before.vm_id, "a");
        let handoff = src.migrate_out("a", &target(), &|| {}, &|_| {}).unwrap().expect("a simulated host hands the VM over");
        // Copied: paused on the source (not reported) until the move completes or is abandoned.
        assert!(src.observe_step(3).vms.is_empty());
        assert!(src.migrate_out("a", &target(), &|| {}, &|_| {}).is_err(), "already in flight");
        src.abort_migration("a").unwrap();
        assert_eq!(src.observe_step(3).vms.len(), 1, "abandoned: it runs on the source again");
        let handoff2 = src.migrate_out("a", &target(), &|| {}, &|_| {}).unwrap().unwrap();
        assert_eq!(handoff2, handoff);
        dst.adopt(&handoff).unwrap();
        src.complete_migration("a").unwrap();
        assert_eq!(src.vm_count(), 0);
        assert!(src.migrate_out("a", &target(), &|| {}, &|_| {}).is_err(), "it is gone");
        let after = dst.observe_step(3).vms.into_iter().find(|v| v.vm_id == "a").unwrap();
        assert_eq!(
            (after.cpu_utilisation, after.vcpus, after.memory_bytes, after.vcpu_mhz),
            (before.cpu_utilisation, before.vcpus, before.memory_bytes, before.vcpu_mhz)
        );
        assert!(dst.adopt(&handoff).unwrap_err().to_string().contains("already runs here"));
        let bogus = SimulatedVm { vm_id: "../etc/passwd".into(), ..handoff };
        assert!(dst.adopt(&bogus).is_err());
    }

    #[test]
    fn injected_faults_leave_the_vm_running_on_its_source() {
        use crate::config::SimulatedFaults;
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), "10\n20\n30\n40\n").unwrap();
        let faulty = |faults: SimulatedFaults| {
            SimulatedHypervisor::load(&SimulatedConfig { faults, time_compression: 1e6, ..cfg(d.path()) }).unwrap()
        };
        let h = faulty(SimulatedFaults { fail_migration_at: Some(0.5), ..Default::default() });
        let e = h.migrate_out("a", &target(), &|| {}, &|_| {}).unwrap_err().to_string();
        assert!(e.contains("failed at 50 %"), "{e}");
        assert_eq!(h.observe_step(3).vms.len(), 1);
        // A hanging copy ends only when aborted, and the VM stays.
        let h = std::sync::Arc::new(faulty(SimulatedFaults { hang_migrations: true, ..Default::default() }));
        let h2 = h.clone();
        let copy = std::thread::spawn(move || h2.migrate_out("a", &target(), &|| {}, &|_| {}));
        while !h.flights().contains_key("a") {
            std::thread::sleep(Duration::from_millis(5));
        }
        h.abort_migration("a").unwrap();
        assert!(copy.join().unwrap().unwrap_err().to_string().contains("aborted"));
        assert_eq!(h.observe_step(3).vms.len(), 1);
        let h = faulty(SimulatedFaults { refuse_adopt: true, ..Default::default() });
        let vm = SimulatedVm { vm_id: "a".into(), vcpus: 1, cpu_mhz_per_core: 2500.0, memory_bytes: 1 << 30 };
        assert!(h.adopt(&vm).unwrap_err().to_string().contains("injected fault"));
    }
}
