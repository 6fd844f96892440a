//! A VM's resize as Kubernetes' in-place resize tracks it (KEP-1287): what is *desired* (asked
//! for), what the agent *allocated* (admitted on its host, checkpointed before acting), what
//! libvirt *acknowledged* (read back after each change), and what the guest *actually* has (vCPUs
//! online, the balloon's current size). The agent keeps one [`ResizeRecord`] per VM in its store
//! and re-applies it after a restart.
//!
//! Outcomes: `in_progress`, `deferred` (the host has no room now; re-checked every cycle),
//! `infeasible` (beyond the domain or the host; not retried until a new size is asked for),
//! `error` (a change failed and was reverted; retried), `done`. Decreases are applied before
//! increases, and an increase waits for the decreases that pay for it.

use serde::{Deserialize, Serialize};

use super::{Allocation, IoLimits};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeStatus {
    InProgress,
    Deferred,
    Infeasible,
    Error,
    Done,
}

impl ResizeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ResizeStatus::InProgress => "in_progress",
            ResizeStatus::Deferred => "deferred",
            ResizeStatus::Infeasible => "infeasible",
            ResizeStatus::Error => "error",
            ResizeStatus::Done => "done",
        }
    }

    /// Whether the agent acts on it again (every cycle).
    pub fn retried(self) -> bool {
        matches!(self, ResizeStatus::InProgress | ResizeStatus::Deferred | ResizeStatus::Error)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResizeRecord {
    pub vm_id: String,
    /// Bumped for every new desired size.
    pub generation: u64,
    pub desired: Allocation,
    pub allocated: Allocation,
    pub acknowledged: Allocation,
    pub actual: Allocation,
    pub status: ResizeStatus,
    /// Why the size was asked for (the rule's reason, or the operator).
    pub reason: String,
    /// Why it is deferred, infeasible or in error.
    pub message: String,
    pub attempts: u32,
    pub updated_ms: u64,
    /// The I/O and network limits asked for with it (laid over the VM's earlier record's:
    /// what a record leaves unset, the earlier one's limit stands).
    #[serde(default)]
    pub io: IoLimits,
}

impl ResizeRecord {
    /// A new desired size for a VM that has `current` now.
    pub fn ask(
        vm_id: &str,
        previous: Option<&ResizeRecord>,
        current: Allocation,
        desired: Allocation,
        reason: &str,
        now_ms: u64,
    ) -> ResizeRecord {
        ResizeRecord {
            vm_id: vm_id.into(),
            generation: previous.map_or(1, |p| p.generation + 1),
            desired,
            allocated: current,
            acknowledged: current,
            actual: current,
            status: ResizeStatus::InProgress,
            reason: reason.into(),
            message: String::new(),
            attempts: 0,
            updated_ms: now_ms,
            io: previous.map(|p| p.io).unwrap_or_default(),
        }
    }
}

/// Whether a desired size can be given on this host now.
#[derive(Clone, Debug, PartialEq)]
pub enum Admission {
    Admit,
    Defer(String),
    Infeasible(String),
}

/// The admission rule for a resize from `current` to `desired`: infeasible beyond the domain's
/// maximum or the host's capacity, or for values that are not sizes; an increase is deferred while
/// the host's other allocations (`others`: every other VM's allocation plus what the host lends or
/// sets aside) leave too little. What takes nothing more (a decrease, or no change) is never
/// deferred, even on a host whose vCPUs are overcommitted already.
pub fn admit_resize(desired: Allocation, current: Allocation, limits: Allocation, capacity: Allocation, others: Allocation) -> Admission {
    for (name, unit, v, now, limit, cap, used) in [
        ("cpu", "cores", desired.cpu_cores, current.cpu_cores, limits.cpu_cores, capacity.cpu_cores, others.cpu_cores),
        ("memory", "MiB", desired.memory_mib, current.memory_mib, limits.memory_mib, capacity.memory_mib, others.memory_mib),
    ] {
        if !(v.is_finite() && v > 0.0) {
            return Admission::Infeasible(format!("{name} {v} is not a size (a finite number > 0)"));
        }
        if v > limit + 1e-9 {
            return Admission::Infeasible(format!("{name} {v:.2} {unit} is above the domain's maximum {limit:.2}"));
        }
        if v > cap + 1e-9 {
            return Admission::Infeasible(format!("{name} {v:.2} {unit} is above the host's capacity {cap:.2}"));
        }
        if v > now + 1e-9 && used + v > cap + 1e-9 {
            return Admission::Defer(format!("{name}: {used:.2} {unit} given to others + {v:.2} > the host's {cap:.2}"));
        }
    }
    Admission::Admit
}

/// One knob's change.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "knob")]
pub enum KnobChange {
    Cpu { from: f64, to: f64 },
    Memory { from: f64, to: f64 },
}

impl KnobChange {
    pub fn decreases(&self) -> bool {
        match *self {
            KnobChange::Cpu { from, to } | KnobChange::Memory { from, to } => to < from,
        }
    }
}

/// The changes from `from` to `to`, decreases first (so they free what the increases take).
pub fn steps(from: Allocation, to: Allocation) -> Vec<KnobChange> {
    let mut out = Vec::new();
    if (from.cpu_cores - to.cpu_cores).abs() > 1e-9 {
        out.push(KnobChange::Cpu { from: from.cpu_cores, to: to.cpu_cores });
    }
    if (from.memory_mib - to.memory_mib).abs() > 1e-9 {
        out.push(KnobChange::Memory { from: from.memory_mib, to: to.memory_mib });
    }
    out.sort_by_key(|c| !c.decreases());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Allocation = Allocation { cpu_cores: 4.0, memory_mib: 8192.0 };
    const CAP: Allocation = Allocation { cpu_cores: 16.0, memory_mib: 32768.0 };

    #[test]
    fn admission_says_infeasible_or_deferred_and_why() {
        let a = |c, m| Allocation { cpu_cores: c, memory_mib: m };
        let now = a(1.0, 4096.0);
        assert_eq!(admit_resize(a(2.0, 4096.0), now, LIMITS, CAP, a(10.0, 20000.0)), Admission::Admit);
        let Admission::Infeasible(why) = admit_resize(a(6.0, 4096.0), now, LIMITS, CAP, a(0.0, 0.0)) else { panic!() };
        assert!(why.contains("domain's maximum 4.00"), "{why}");
        let Admission::Infeasible(why) = admit_resize(a(-1.0, 4096.0), now, LIMITS, CAP, a(0.0, 0.0)) else { panic!() };
        assert!(why.contains("not a size"), "{why}");
        let Admission::Infeasible(why) = admit_resize(a(2.0, f64::NAN), now, LIMITS, CAP, a(0.0, 0.0)) else { panic!() };
        assert!(why.starts_with("memory"), "{why}");
        let Admission::Defer(why) = admit_resize(a(4.0, 4096.0), now, LIMITS, CAP, a(13.0, 0.0)) else { panic!() };
        assert!(why.contains("13.00 cores given to others"), "{why}");
        // On a host already overcommitted (others hold 20 of 16 cores), a decrease still goes
        // through; an increase waits.
        assert_eq!(admit_resize(a(0.5, 4096.0), now, LIMITS, CAP, a(20.0, 0.0)), Admission::Admit);
        assert!(matches!(admit_resize(a(1.5, 4096.0), now, LIMITS, CAP, a(20.0, 0.0)), Admission::Defer(_)));
    }

    #[test]
    fn decreases_come_before_increases() {
        let s = steps(Allocation { cpu_cores: 1.0, memory_mib: 4096.0 }, Allocation { cpu_cores: 2.0, memory_mib: 2048.0 });
        assert_eq!(s, vec![KnobChange::Memory { from: 4096.0, to: 2048.0 }, KnobChange::Cpu { from: 1.0, to: 2.0 }]);
        assert!(steps(Allocation { cpu_cores: 1.0, memory_mib: 1.0 }, Allocation { cpu_cores: 1.0, memory_mib: 1.0 }).is_empty());
        let r = ResizeRecord::ask("v", None, Allocation::default(), Allocation { cpu_cores: 1.0, memory_mib: 1.0 }, "op", 5);
        let r2 = ResizeRecord::ask("v", Some(&r), r.allocated, r.desired, "op", 6);
        assert_eq!((r.generation, r2.generation, r2.status.as_str()), (1, 2, "in_progress"));
        assert!(ResizeStatus::Deferred.retried() && !ResizeStatus::Infeasible.retried());
    }
}
