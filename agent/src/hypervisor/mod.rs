//! Access to the VMs of one host, behind one trait with two implementations:
//! [`libvirt::LibvirtDriver`] (a real KVM host through libvirt, by way of the `presage-libvirt`
//! driver process) and
//! [`simulated::SimulatedHypervisor`] (VMs replaying real traces, for demos, tests and scale).
//!
//! Calls block (libvirt is a synchronous C library, reached over a pipe): callers run them on
//! `spawn_blocking`.

pub mod libvirt;
pub mod simulated;

use presage_protocol::pb::{HostCapacity, HostUsage, SimulatedVm, TracePosition, VmPresence, VmSample, VmSize, VmSizeReadback};

#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    #[error("libvirt ({uri}): {detail}")]
    Libvirt { uri: String, detail: String },
    #[error("simulated hypervisor: {0}")]
    Trace(#[from] presage_traces::TraceError),
    #[error("{0}")]
    Migration(String),
    /// A migration's pre-check failed: nothing was started, the VM is where it was.
    #[error("pre-check failed: {0}")]
    Precheck(String),
    /// A resize was refused or failed (what was changed has been set back).
    #[error("{0}")]
    Resize(String),
    /// The guest did not do what a resize asked of it (a balloon target it does not follow);
    /// what was changed has been set back.
    #[error("{0}")]
    Guest(String),
}

/// Where a VM is to be moved: the destination host and how its hypervisor is reached (the
/// destination's registration; empty for simulated hosts).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationTarget {
    pub host: String,
    /// The libvirt connection URI of the destination, e.g. `qemu+tls://kvm-07/system`.
    pub uri: String,
    /// The migration data channel, e.g. `tcp://10.0.0.7` (empty: libvirt's default).
    pub data_uri: String,
}

/// How far a migration has got (from the hypervisor's job information).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MigrationProgress {
    pub elapsed_ms: u64,
    pub data_total: u64,
    pub data_processed: u64,
    pub data_remaining: u64,
    pub bytes_per_s: u64,
}

/// Receives progress reports while a migration runs (called from the migrating thread).
pub type ProgressSink<'a> = &'a (dyn Fn(MigrationProgress) + Sync);

/// Called once when the hypervisor has taken a migration on: an `abort_migration` from then on
/// stops it. An abort that came earlier would find nothing to stop, so the agent holds aborts
/// of a migration it was asked for until this is called or the migration has ended.
pub type StartedSink<'a> = &'a (dyn Fn() + Sync);

/// What one observation of the host's VMs found.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    pub vms: Vec<VmSample>,
    /// Set when the hypervisor, not the real machine, defines the host's usage (simulation).
    pub host_usage: Option<HostUsage>,
    /// Set by simulated hypervisors: the trace line these samples come from.
    pub trace: Option<TracePosition>,
}

pub trait Hypervisor: Send + Sync {
    /// `libvirt` or `simulated`, as sent in the registration.
    fn kind(&self) -> &'static str;
    /// The host's capacity as the hypervisor sees it. NICs may be left empty for the caller to
    /// fill from the host sampler.
    fn capacity(&self) -> Result<HostCapacity, HypervisorError>;
    /// Samples every VM. Rates come from the difference to the previous call.
    fn observe(&self) -> Result<Observation, HypervisorError>;
    /// Moves `vm_id` away to `target`, reporting progress as it goes. A simulated host copies it,
    /// pauses it and returns what the destination needs to take it over ([`adopt`](Self::adopt)).
    /// A libvirt host migrates it live and returns `None` once it runs on the destination. A
    /// failed pre-check is [`HypervisorError::Precheck`]: nothing was started. `started` is
    /// called as soon as an abort would stop the migration.
    fn migrate_out(
        &self,
        vm_id: &str,
        target: &MigrationTarget,
        started: StartedSink<'_>,
        progress: ProgressSink<'_>,
    ) -> Result<Option<SimulatedVm>, HypervisorError>;
    /// Whether `vm_id` is here, runs here, and is migrating away.
    fn inspect(&self, vm_id: &str) -> Result<VmPresence, HypervisorError>;
    /// Takes over a VM another simulated host handed over.
    fn adopt(&self, vm: &SimulatedVm) -> Result<(), HypervisorError>;
    /// The destination runs the VM now: let go of it here for good.
    fn complete_migration(&self, vm_id: &str) -> Result<(), HypervisorError>;
    /// Stops a migration of `vm_id` that is copying or waiting to complete; the VM keeps
    /// running here. Idempotent.
    fn abort_migration(&self, vm_id: &str) -> Result<(), HypervisorError>;
    /// Applies every knob `size` sets to the running VM `vm_id` (decreases first), reads each
    /// back, and sets back what it changed when any knob fails. Returns what the VM has after.
    fn resize(&self, vm_id: &str, size: &VmSize) -> Result<VmSizeReadback, HypervisorError>;
    /// What the running VM `vm_id` has now.
    fn read_size(&self, vm_id: &str) -> Result<VmSizeReadback, HypervisorError>;
    /// The agent is stopping: migrations in progress give up (simulated copies stop; libvirt
    /// jobs are aborted); their VMs stay here.
    fn shutdown(&self) {}
}
