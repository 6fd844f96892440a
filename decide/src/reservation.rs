//! Reservations (pre-allocation): the admission rule an agent applies to the capacity it is
//! asked to hold, shared by the agent (which persists its book) and the simulator (which runs the
//! same book in-process), so both refuse the same requests.
//!
//! - A **hard** reservation holds CPU and memory for a VM that is about to arrive (a migration's
//!   destination holds the VM's p90 demand before the copy starts). Hard reservations are
//!   admitted only if the host's committed use, the hard reservations it already holds and the
//!   new one fit within its capacity (CPU times an admission limit, memory exactly).
//! - A **soft** reservation records expected growth of a resident VM; it never blocks a hard
//!   one, but the book reports it so planners see the headroom it claims.
//! - Every reservation expires; an expired one holds nothing and is purged.
//!
//! Pure: the caller passes the time and the host's committed use.

use serde::{Deserialize, Serialize};

/// The share of a host's CPU that its committed use plus hard reservations may reach, unless
/// configured otherwise (1.0: no CPU overcommit by reservations).
pub const DEFAULT_CPU_LIMIT: f64 = 1.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationKind {
    Hard,
    Soft,
}

/// One reservation on one host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    /// Unique per host (the coordinator uses plan id and VM).
    pub id: String,
    pub vm_id: String,
    pub kind: ReservationKind,
    /// CPU held, MHz.
    pub cpu_mhz: f64,
    /// Memory held, MiB.
    pub memory_mib: f64,
    /// Unix milliseconds after which it holds nothing.
    pub expires_at_ms: u64,
}

impl Reservation {
    /// A hard reservation of `cpu_mhz` and `memory_mib` for `vm_id`, until `expires_at_ms`.
    pub fn hard(id: &str, vm_id: &str, cpu_mhz: f64, memory_mib: f64, expires_at_ms: u64) -> Reservation {
        Reservation { id: id.into(), vm_id: vm_id.into(), kind: ReservationKind::Hard, cpu_mhz, memory_mib, expires_at_ms }
    }

    pub fn live(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }
}

/// CPU and memory of a host, or in use on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_mhz: f64,
    pub memory_mib: f64,
}

/// Why a reservation was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "reservation {id}: CPU would be overcommitted: {committed:.0} MHz in use + {held:.0} MHz held + {asked:.0} MHz asked > {limit:.0} MHz admissible"
    )]
    Cpu { id: String, committed: f64, held: f64, asked: f64, limit: f64 },
    #[error(
        "reservation {id}: memory would be overcommitted: {committed:.0} MiB in use + {held:.0} MiB held + {asked:.0} MiB asked > {limit:.0} MiB"
    )]
    Memory { id: String, committed: f64, held: f64, asked: f64, limit: f64 },
    #[error("reservation {id}: {what}")]
    Invalid { id: String, what: String },
    #[error("reservation {id} already exists for VM {vm_id}")]
    Duplicate { id: String, vm_id: String },
}

/// The reservations one host holds, and its admission rule.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReservationBook {
    entries: Vec<Reservation>,
}

impl ReservationBook {
    pub fn from_entries(entries: Vec<Reservation>) -> ReservationBook {
        ReservationBook { entries }
    }

    pub fn entries(&self) -> &[Reservation] {
        &self.entries
    }

    /// What the live reservations of `kind` hold.
    pub fn held(&self, kind: ReservationKind, now_ms: u64) -> Resources {
        self.entries
            .iter()
            .filter(|r| r.kind == kind && r.live(now_ms))
            .fold(Resources::default(), |a, r| Resources { cpu_mhz: a.cpu_mhz + r.cpu_mhz, memory_mib: a.memory_mib + r.memory_mib })
    }

    /// Checks `r` against the host without recording it. `committed` is what the host's resident
    /// VMs use (memory: what they were given); `cpu_limit` the share of CPU capacity that hard
    /// reservations may fill (1.0: no overcommit).
    pub fn check(&self, r: &Reservation, now_ms: u64, capacity: Resources, committed: Resources, cpu_limit: f64) -> Result<(), Refusal> {
        let id = r.id.clone();
        if r.id.is_empty() || r.vm_id.is_empty() {
            return Err(Refusal::Invalid { id, what: "id and vm_id must not be empty".into() });
        }
        if !(r.cpu_mhz.is_finite() && r.cpu_mhz >= 0.0 && r.memory_mib.is_finite() && r.memory_mib >= 0.0) {
            return Err(Refusal::Invalid {
                id,
                what: format!("cpu_mhz {} and memory_mib {} must be finite and >= 0", r.cpu_mhz, r.memory_mib),
            });
        }
        if !r.live(now_ms) {
            return Err(Refusal::Invalid { id, what: "already expired".into() });
        }
        if let Some(e) = self.entries.iter().find(|e| e.id == r.id && e.live(now_ms)) {
            return Err(Refusal::Duplicate { id, vm_id: e.vm_id.clone() });
        }
        if r.kind == ReservationKind::Soft {
            return Ok(());
        }
        let held = self.held(ReservationKind::Hard, now_ms);
        let cpu_cap = capacity.cpu_mhz * cpu_limit;
        if committed.cpu_mhz + held.cpu_mhz + r.cpu_mhz > cpu_cap + 1e-9 {
            return Err(Refusal::Cpu { id, committed: committed.cpu_mhz, held: held.cpu_mhz, asked: r.cpu_mhz, limit: cpu_cap });
        }
        if committed.memory_mib + held.memory_mib + r.memory_mib > capacity.memory_mib + 1e-9 {
            return Err(Refusal::Memory {
                id,
                committed: committed.memory_mib,
                held: held.memory_mib,
                asked: r.memory_mib,
                limit: capacity.memory_mib,
            });
        }
        Ok(())
    }

    /// [`check`](Self::check)s and records `r`.
    pub fn admit(&mut self, r: Reservation, now_ms: u64, capacity: Resources, committed: Resources, cpu_limit: f64) -> Result<(), Refusal> {
        self.check(&r, now_ms, capacity, committed, cpu_limit)?;
        self.entries.retain(|e| e.id != r.id);
        self.entries.push(r);
        Ok(())
    }

    /// Removes reservation `id` (released, or turned into an allocation when its VM arrived).
    pub fn remove(&mut self, id: &str) -> Option<Reservation> {
        let i = self.entries.iter().position(|e| e.id == id)?;
        Some(self.entries.remove(i))
    }

    /// Drops expired reservations; returns them.
    pub fn purge_expired(&mut self, now_ms: u64) -> Vec<Reservation> {
        let (gone, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.entries).into_iter().partition(|e| !e.live(now_ms));
        self.entries = keep;
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hard(id: &str, cpu: f64, mem: f64, exp: u64) -> Reservation {
        Reservation::hard(id, &format!("vm-{id}"), cpu, mem, exp)
    }

    const CAP: Resources = Resources { cpu_mhz: 10_000.0, memory_mib: 8_192.0 };

    #[test]
    fn hard_reservations_are_admitted_until_the_host_would_be_overcommitted() {
        let mut b = ReservationBook::default();
        let used = Resources { cpu_mhz: 4_000.0, memory_mib: 2_048.0 };
        b.admit(hard("a", 3_000.0, 2_048.0, 100), 0, CAP, used, 1.0).unwrap();
        // 4000 + 3000 + 3500 > 10000
        let e = b.admit(hard("b", 3_500.0, 1.0, 100), 0, CAP, used, 1.0).unwrap_err();
        assert!(matches!(e, Refusal::Cpu { .. }) && e.to_string().contains("reservation b"), "{e}");
        // Memory binds on its own: 2048 + 2048 + 4097 > 8192.
        assert!(matches!(b.admit(hard("c", 1.0, 4_097.0, 100), 0, CAP, used, 1.0), Err(Refusal::Memory { .. })));
        b.admit(hard("d", 3_000.0, 4_096.0, 100), 0, CAP, used, 1.0).unwrap();
        // Soft reservations never block, and are not counted against hard ones.
        let soft = Reservation { kind: ReservationKind::Soft, ..hard("s", 50_000.0, 50_000.0, 100) };
        b.admit(soft, 0, CAP, used, 1.0).unwrap();
        assert_eq!(b.held(ReservationKind::Hard, 0), Resources { cpu_mhz: 6_000.0, memory_mib: 6_144.0 });
        // An overcommit limit above 1 admits more CPU.
        assert!(b.check(&hard("e", 2_000.0, 0.0, 100), 0, CAP, used, 1.2).is_ok());
        assert!(b.check(&hard("e", 2_000.0, 0.0, 100), 0, CAP, used, 1.0).is_err());
    }

    #[test]
    fn expired_reservations_hold_nothing_and_are_purged() {
        let mut b = ReservationBook::default();
        b.admit(hard("a", 9_000.0, 0.0, 100), 0, CAP, Resources::default(), 1.0).unwrap();
        assert!(b.check(&hard("b", 2_000.0, 0.0, 200), 50, CAP, Resources::default(), 1.0).is_err());
        assert!(b.check(&hard("b", 2_000.0, 0.0, 200), 100, CAP, Resources::default(), 1.0).is_ok());
        assert_eq!(b.purge_expired(100).len(), 1);
        assert!(b.entries().is_empty());
    }

    #[test]
    fn bad_requests_are_named() {
        let b = ReservationBook::default();
        for (r, what) in [
            (hard("", 1.0, 1.0, 10), "must not be empty"),
            (hard("x", f64::NAN, 1.0, 10), "finite"),
            (hard("x", 1.0, -1.0, 10), "finite"),
            (hard("x", 1.0, 1.0, 0), "expired"),
        ] {
            let e = b.check(&r, 0, CAP, Resources::default(), 1.0).unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
        }
        let mut b = ReservationBook::default();
        b.admit(hard("x", 1.0, 1.0, 10), 0, CAP, Resources::default(), 1.0).unwrap();
        assert!(matches!(b.admit(hard("x", 1.0, 1.0, 10), 0, CAP, Resources::default(), 1.0), Err(Refusal::Duplicate { .. })));
        assert_eq!(b.remove("x").map(|r| r.id), Some("x".to_string()));
        assert_eq!(b.remove("x"), None);
    }
}
