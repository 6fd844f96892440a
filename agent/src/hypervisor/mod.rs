//! Access to the VMs of one host, behind one trait with two implementations:
//! [`libvirt::LibvirtHypervisor`] (a real KVM host through the `virt` crate) and
//! [`simulated::SimulatedHypervisor`] (VMs replaying real traces, for demos, tests and scale).
//!
//! Calls block (libvirt is a synchronous C library): callers run them on `spawn_blocking`.

pub mod libvirt;
pub mod simulated;

use presage_protocol::pb::{HostCapacity, HostUsage, TracePosition, VmSample};

#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    #[error("libvirt ({uri}): {detail}")]
    Libvirt { uri: String, detail: String },
    #[error("simulated hypervisor: {0}")]
    Trace(#[from] presage_traces::TraceError),
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
}
