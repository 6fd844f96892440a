//! Sizing: proactive resizing and borrowing between VMs on one host.
//!
//! - [`rules`]: the operators' policies per VM or group (`[sizing]`), validated field by field.
//! - [`resize`]: what a VM's allocation should be before its forecast peak, with the safeguards
//!   (floors, ceilings, confidence before shrinking, steps per cycle, resident set, saturation and
//!   OOM raising the floor).
//! - [`progress`]: a resize's state as KEP-1287 tracks it (desired, allocated, acknowledged,
//!   actual; in progress, deferred, infeasible, error) and its admission rule on the host.
//! - [`lease`]: borrowing leases and their admission rule (no host overcommit, lenders keep their
//!   floor), deadlines and early revocation when a lender needs its capacity back.
//! - [`broker`]: the coordinator's matching of borrowers to lenders by priority and cost.
//! - [`peaks`]: a VM's peak use over the last hour and day, in bounded memory.
//! - [`pass`]: one host's pass — resizes (decreases first, admitted by the host's room), then
//!   the broker on what they leave — as the coordinator runs it and the replay measures it.
//!
//! The agent, the coordinator and the simulator's sizing replay all call these; none decides
//! sizes any other way.

use serde::{Deserialize, Serialize};

pub mod broker;
pub mod lease;
pub mod pass;
pub mod peaks;
pub mod progress;
pub mod resize;
pub mod rules;

/// CPU (cores: a CFS quota of that many CPUs' time) and memory (MiB) given to a VM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    pub cpu_cores: f64,
    pub memory_mib: f64,
}

/// A VM's I/O and network limits as presage sets them, bytes per second: over all of its
/// disks (reads and writes together) and over all of its interfaces (each direction). `None`:
/// left as it is; `Some(0.0)`: no limit. Unlike an [`Allocation`] these are caps, not shares
/// of the host handed out: the host's agent admits them as they come (the optimiser is what
/// keeps a host's VMs within its disk and network bandwidth).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IoLimits {
    pub disk_bytes_per_s: Option<f64>,
    pub net_bytes_per_s: Option<f64>,
}

impl IoLimits {
    pub fn is_empty(&self) -> bool {
        self.disk_bytes_per_s.is_none() && self.net_bytes_per_s.is_none()
    }

    /// `self` with what `newer` sets laid over it.
    pub fn updated(self, newer: IoLimits) -> IoLimits {
        IoLimits {
            disk_bytes_per_s: newer.disk_bytes_per_s.or(self.disk_bytes_per_s),
            net_bytes_per_s: newer.net_bytes_per_s.or(self.net_bytes_per_s),
        }
    }

    /// Why a limit is not a rate (each must be finite and >= 0), naming it.
    pub fn check(&self) -> Result<(), String> {
        for (name, v) in [("disk_bytes_per_s", self.disk_bytes_per_s), ("net_bytes_per_s", self.net_bytes_per_s)] {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(format!("{name}: {v} is not a rate in bytes per second >= 0 (0 removes the limit)"));
            }
        }
        Ok(())
    }
}

impl Allocation {
    pub fn new(cpu_cores: f64, memory_mib: f64) -> Allocation {
        Allocation { cpu_cores, memory_mib }
    }

    pub fn plus(self, o: Allocation) -> Allocation {
        Allocation { cpu_cores: self.cpu_cores + o.cpu_cores, memory_mib: self.memory_mib + o.memory_mib }
    }

    pub fn minus(self, o: Allocation) -> Allocation {
        Allocation { cpu_cores: self.cpu_cores - o.cpu_cores, memory_mib: self.memory_mib - o.memory_mib }
    }
}
