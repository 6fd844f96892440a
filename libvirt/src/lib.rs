//! presage-libvirt: the only presage code that links libvirt. It is a process of its own,
//! `presage-libvirt`, that the agent of a libvirt host starts and talks to over a pipe
//! ([`driver`], `proto/presage/v1/libvirt_driver.proto`); agents of simulated hosts never load
//! libvirt's libraries. A libvirt call that crashes takes down the driver, which the agent
//! restarts, not the agent.
//!
//! [`host`] is a KVM host through libvirt: sampling domains, live migration with pre- and
//! post-checks, aborts and the presence of a VM. [`resize`] sets and reads back a running
//! domain's size (vCPUs, balloon, CPU shares and quota, disk and interface limits).

pub mod domain_stats;
pub mod driver;
pub mod host;
pub mod resize;

pub use host::{HostError, LibvirtHost, hypervisor_provides_cpu};
