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
