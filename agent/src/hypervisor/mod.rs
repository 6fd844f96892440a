//! Access to the VMs of one host, behind one trait with two implementations:
//! [`libvirt::LibvirtHypervisor`] (a real KVM host through the `virt` crate) and
//! [`simulated::SimulatedHypervisor`] (VMs replaying real traces, for demos, tests and scale).
//!
//! Calls block (libvirt is a synchronous C library): callers run them on `spawn_blocking`.

pub mod libvirt;
pub mod simulated;

use presage_protocol::pb::{HostCapacity, HostUsage, SimulatedVm, TracePosition, VmSample};

#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    #[error("libvirt ({uri}): {detail}")]
    Libvirt { uri: String, detail: String },
    #[error("simulated hypervisor: {0}")]
    Trace(#[from] presage_traces::TraceError),
    #[error("{0}")]
    Migration(String),
}

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
    /// Moves `vm_id` away to `destination_host`. A simulated host stops replaying it and returns
    /// what the destination needs to take it over ([`adopt`](Self::adopt)).
    fn migrate_out(&self, vm_id: &str, destination_host: &str) -> Result<Option<SimulatedVm>, HypervisorError>;
    /// Takes over a VM another simulated host handed over.
    fn adopt(&self, vm: &SimulatedVm) -> Result<(), HypervisorError>;
    /// The destination runs the VM now: let go of it here for good.
    fn complete_migration(&self, vm_id: &str) -> Result<(), HypervisorError>;
    /// Stops a migration of `vm_id` that is copying or waiting to complete; the VM keeps
    /// running here. Idempotent.
    fn abort_migration(&self, vm_id: &str) -> Result<(), HypervisorError>;
    /// The agent is stopping: copies in progress give up (their VMs stay here).
    fn shutdown(&self) {}
}
