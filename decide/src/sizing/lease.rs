//! Borrowing leases and their admission rule, beside the reservation rule: one definition that the
//! agent applies to its durable book, the coordinator's broker to what it proposes, and the
//! simulator to its in-process books.
//!
//! A lease moves `amount` of one resource to a borrower VM until an absolute deadline: CPU from
//! a lender VM on the same host (its quota goes down by as much as the borrower's goes up) or
//! from the host's unallocated CPU; memory only from the host's reserve. It is admitted only if
//! the host is not overcommitted by it, the lender keeps its floor, the borrower stays within its
//! domain and its borrowing limit, and the lease is no longer than both VMs' policies allow.
//! The agent ends every lease at its deadline, or earlier when the lender needs the capacity back
//! ([`LeaseBook::due`]), with or without a coordinator.

use serde::{Deserialize, Serialize};

use super::Allocation;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseResource {
    /// CPU, cores (applied as CFS quota).
    Cpu,
    /// Memory, MiB (from the host's reserve only).
    Memory,
}

impl LeaseResource {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseResource::Cpu => "cpu",
            LeaseResource::Memory => "memory",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            LeaseResource::Cpu => "cores",
            LeaseResource::Memory => "MiB",
        }
    }

    fn of(self, a: &Allocation) -> f64 {
        match self {
            LeaseResource::Cpu => a.cpu_cores,
            LeaseResource::Memory => a.memory_mib,
        }
    }
}

/// One lease on one host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub id: String,
    pub resource: LeaseResource,
    pub amount: f64,
    /// The VM that lends; `None`: the host's unallocated capacity (memory: its reserve).
    pub lender: Option<String>,
    pub borrower: String,
    pub granted_at_ms: u64,
    /// Unix ms at which the agent takes it back, whatever else happens.
    pub deadline_ms: u64,
    /// Why it was granted (the broker's or the operator's words).
    pub reason: String,
}

impl Lease {
    pub fn live(&self, now_ms: u64) -> bool {
        now_ms < self.deadline_ms
    }
}

/// A VM on the host as the admission rule sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseParty {
    pub vm_id: String,
    /// Its own allocation (leases not counted).
    pub allocated: Allocation,
    /// The domain's maximum.
    pub limits: Allocation,
    /// What it must keep when it lends (policy floor, its forecast's need over the lease).
    pub keep: Allocation,
    pub may_lend: bool,
    pub may_borrow: bool,
    /// Most it may borrow at once.
    pub max_borrow: Allocation,
    pub max_lease_ms: u64,
}

/// The host as the admission rule sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseHost<'a> {
    /// What VMs may be given in all (CPU cores, memory MiB), the reserve included.
    pub capacity: Allocation,
    /// Memory set aside for leases, MiB (inside `capacity`, not allocated to any VM).
    pub memory_reserve_mib: f64,
    pub vms: &'a [LeaseParty],
}

/// Why a lease was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum LeaseRefusal {
    #[error("lease {id}: {what}")]
    Invalid { id: String, what: String },
    #[error("lease {id} already exists")]
    Duplicate { id: String },
    #[error("lease {id}: VM {vm} is not on this host")]
    NotHere { id: String, vm: String },
    #[error("lease {id}: {vm} may not {what} (its policy forbids it, or it has no forecast yet to judge what it needs)")]
    NotAllowed { id: String, vm: String, what: &'static str },
    #[error("lease {id}: lender {vm} would keep {left:.2} {unit} of {resource}, below the {keep:.2} it must keep")]
    LenderFloor { id: String, vm: String, resource: &'static str, unit: &'static str, left: f64, keep: f64 },
    #[error("lease {id}: borrower {vm} would hold {total:.2} {unit} of {resource}, above {limit:.2} ({what})")]
    BorrowerLimit { id: String, vm: String, resource: &'static str, unit: &'static str, total: f64, limit: f64, what: &'static str },
    #[error("lease {id}: the host would be overcommitted: {given:.2} {unit} of {resource} given + {asked:.2} asked > {capacity:.2}")]
    Overcommit { id: String, resource: &'static str, unit: &'static str, given: f64, asked: f64, capacity: f64 },
    #[error("lease {id}: memory is lent only from the host's reserve ({free:.0} MiB of {reserve:.0} free, {asked:.0} asked)")]
    Reserve { id: String, free: f64, reserve: f64, asked: f64 },
}

/// Why a lease ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LeaseEnd {
    /// Its deadline passed.
    Deadline,
    /// The lender needs the capacity back (`need` over the lease horizon, `kept` now).
    LenderNeeds { need: f64, kept: f64 },
    /// The borrower or the lender left the host.
    Gone { vm: String },
    /// An operator revoked it.
    Revoked { by: String },
}

impl LeaseEnd {
    pub fn describe(&self) -> String {
        match self {
            LeaseEnd::Deadline => "deadline".into(),
            LeaseEnd::LenderNeeds { need, kept } => format!("lender needs {need:.2} and keeps {kept:.2}"),
            LeaseEnd::Gone { vm } => format!("{vm} left the host"),
            LeaseEnd::Revoked { by } => format!("revoked by {by}"),
        }
    }
}

/// The leases one host holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeaseBook {
    entries: Vec<Lease>,
}

impl LeaseBook {
    pub fn from_entries(entries: Vec<Lease>) -> LeaseBook {
        LeaseBook { entries }
    }

    pub fn entries(&self) -> &[Lease] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What `vm` lends and borrows now.
    pub fn flows(&self, vm: &str, now_ms: u64) -> (Allocation, Allocation) {
        let mut lent = Allocation::default();
        let mut borrowed = Allocation::default();
        for l in self.entries.iter().filter(|l| l.live(now_ms)) {
            if l.lender.as_deref() == Some(vm) {
                lent.add(l.resource, l.amount);
            }
            if l.borrower == vm {
                borrowed.add(l.resource, l.amount);
            }
        }
        (lent, borrowed)
    }

    /// What `vm` may use now: its own allocation, plus what it borrows, less what it lends.
    pub fn effective(&self, vm: &str, allocated: Allocation, now_ms: u64) -> Allocation {
        let (lent, borrowed) = self.flows(vm, now_ms);
        Allocation {
            cpu_cores: allocated.cpu_cores - lent.cpu_cores + borrowed.cpu_cores,
            memory_mib: allocated.memory_mib - lent.memory_mib + borrowed.memory_mib,
        }
    }

    /// What live leases from the host itself (no lender) hold.
    pub fn from_host(&self, now_ms: u64) -> Allocation {
        let mut a = Allocation::default();
        for l in self.entries.iter().filter(|l| l.live(now_ms) && l.lender.is_none()) {
            a.add(l.resource, l.amount);
        }
        a
    }

    /// What a resize of one VM must leave room for on its host: `others` (the other VMs' own
    /// allocations), the CPU the host lends now, and the memory it keeps back for leases.
    pub fn given_besides(&self, others: Allocation, memory_reserve_mib: f64, now_ms: u64) -> Allocation {
        Allocation::new(others.cpu_cores + self.from_host(now_ms).cpu_cores, others.memory_mib + memory_reserve_mib)
    }

    /// Checks `l` against the host without recording it.
    pub fn check(&self, l: &Lease, host: &LeaseHost<'_>, now_ms: u64) -> Result<(), LeaseRefusal> {
        let id = l.id.clone();
        let invalid = |what: String| Err(LeaseRefusal::Invalid { id: id.clone(), what });
        if l.id.trim().is_empty() || l.borrower.trim().is_empty() {
            return invalid("id and borrower must not be empty".into());
        }
        if !(l.amount.is_finite() && l.amount > 0.0) {
            return invalid(format!("amount must be a finite number > 0, found {}", l.amount));
        }
        if l.lender.as_deref() == Some(l.borrower.as_str()) {
            return invalid(format!("{} cannot lend to itself", l.borrower));
        }
        if !l.live(now_ms) {
            return invalid(format!("deadline {} is not after now ({now_ms})", l.deadline_ms));
        }
        if self.entries.iter().any(|e| e.id == l.id && e.live(now_ms)) {
            return Err(LeaseRefusal::Duplicate { id });
        }
        let find = |vm: &str| host.vms.iter().find(|v| v.vm_id == vm).ok_or(LeaseRefusal::NotHere { id: id.clone(), vm: vm.into() });
        let borrower = find(&l.borrower)?;
        let lender = l.lender.as_deref().map(find).transpose()?;
        let duration = l.deadline_ms - now_ms;
        for v in std::iter::once(borrower).chain(lender) {
            if duration > v.max_lease_ms {
                return invalid(format!(
                    "lasts {} s, longer than {}'s policy allows ({} s)",
                    duration / 1000,
                    v.vm_id,
                    v.max_lease_ms / 1000
                ));
            }
        }
        if !borrower.may_borrow {
            return Err(LeaseRefusal::NotAllowed { id, vm: borrower.vm_id.clone(), what: "borrow" });
        }
        let res = l.resource;
        let (name, unit) = (res.as_str(), res.unit());
        let (b_lent, b_borrowed) = self.flows(&borrower.vm_id, now_ms);
        if res.of(&b_lent) > 0.0 {
            return invalid(format!("{} lends {name} now and cannot borrow it", borrower.vm_id));
        }
        let borrowed = res.of(&b_borrowed) + l.amount;
        if borrowed > res.of(&borrower.max_borrow) + 1e-9 {
            return Err(LeaseRefusal::BorrowerLimit {
                id,
                vm: borrower.vm_id.clone(),
                resource: name,
                unit,
                total: borrowed,
                limit: res.of(&borrower.max_borrow),
                what: "its borrowing limit",
            });
        }
        let holds = res.of(&borrower.allocated) + borrowed;
        if holds > res.of(&borrower.limits) + 1e-9 {
            return Err(LeaseRefusal::BorrowerLimit {
                id,
                vm: borrower.vm_id.clone(),
                resource: name,
                unit,
                total: holds,
                limit: res.of(&borrower.limits),
                what: "its domain's maximum",
            });
        }
        match lender {
            Some(lv) => {
                if res == LeaseResource::Memory {
                    return invalid("memory is lent only from the host's reserve, not by a VM".into());
                }
                if !lv.may_lend {
                    return Err(LeaseRefusal::NotAllowed { id, vm: lv.vm_id.clone(), what: "lend" });
                }
                let (lent, borrowed) = self.flows(&lv.vm_id, now_ms);
                if res.of(&borrowed) > 0.0 {
                    return invalid(format!("{} borrows {name} now and cannot lend it", lv.vm_id));
                }
                let left = res.of(&lv.allocated) - res.of(&lent) - l.amount;
                if left + 1e-9 < res.of(&lv.keep) {
                    return Err(LeaseRefusal::LenderFloor { id, vm: lv.vm_id.clone(), resource: name, unit, left, keep: res.of(&lv.keep) });
                }
            }
            None => {
                let from_host = res.of(&self.from_host(now_ms));
                if res == LeaseResource::Memory && from_host + l.amount > host.memory_reserve_mib + 1e-9 {
                    return Err(LeaseRefusal::Reserve {
                        id,
                        free: host.memory_reserve_mib - from_host,
                        reserve: host.memory_reserve_mib,
                        asked: l.amount,
                    });
                }
                // Everything given: the VMs' own allocations, and what the host lends already
                // (CPU) or sets aside for leases (memory, inside which this lease must fit).
                let allocated: f64 = host.vms.iter().map(|v| res.of(&v.allocated)).sum();
                let (given, asked) = match res {
                    LeaseResource::Cpu => (allocated + from_host, l.amount),
                    LeaseResource::Memory => (allocated + host.memory_reserve_mib, 0.0),
                };
                if given + asked > res.of(&host.capacity) + 1e-9 {
                    return Err(LeaseRefusal::Overcommit {
                        id,
                        resource: name,
                        unit,
                        given,
                        asked: l.amount,
                        capacity: res.of(&host.capacity),
                    });
                }
            }
        }
        Ok(())
    }

    /// [`check`](Self::check)s and records `l`.
    pub fn admit(&mut self, l: Lease, host: &LeaseHost<'_>, now_ms: u64) -> Result<(), LeaseRefusal> {
        self.check(&l, host, now_ms)?;
        self.entries.retain(|e| e.id != l.id);
        self.entries.push(l);
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<&Lease> {
        self.entries.iter().find(|l| l.id == id)
    }

    pub fn remove(&mut self, id: &str) -> Option<Lease> {
        let i = self.entries.iter().position(|e| e.id == id)?;
        Some(self.entries.remove(i))
    }

    /// The leases that must end now, and why: past their deadline; a party no longer on the host
    /// (`present`); or a lender whose need over the lease horizon (`need`, in the lease's
    /// resource) exceeds what it keeps. Newest loans of a lender are taken back first, only as
    /// many as its need requires. Does not remove them: the caller ends them (journaled) first.
    pub fn due(
        &self,
        now_ms: u64,
        present: impl Fn(&str) -> bool,
        allocated: impl Fn(&str) -> Allocation,
        need: impl Fn(&str, LeaseResource) -> Option<f64>,
    ) -> Vec<(Lease, LeaseEnd)> {
        let mut out: Vec<(Lease, LeaseEnd)> = Vec::new();
        for l in &self.entries {
            if !l.live(now_ms) {
                out.push((l.clone(), LeaseEnd::Deadline));
            } else if let Some(vm) = std::iter::once(&l.borrower).chain(l.lender.as_ref()).find(|v| !present(v)) {
                out.push((l.clone(), LeaseEnd::Gone { vm: vm.clone() }));
            }
        }
        let mut lenders: Vec<(&str, LeaseResource)> =
            self.entries.iter().filter_map(|l| l.lender.as_deref().map(|v| (v, l.resource))).collect();
        lenders.sort();
        lenders.dedup();
        for (lender, res) in lenders {
            let Some(need) = need(lender, res) else { continue };
            let mut loans: Vec<&Lease> = self
                .entries
                .iter()
                .filter(|l| l.lender.as_deref() == Some(lender) && l.resource == res && !out.iter().any(|(o, _)| o.id == l.id))
                .collect();
            loans.sort_by(|a, b| b.granted_at_ms.cmp(&a.granted_at_ms).then(b.id.cmp(&a.id)));
            let mut kept = res.of(&allocated(lender)) - loans.iter().map(|l| l.amount).sum::<f64>();
            for l in loans {
                if kept + 1e-9 >= need {
                    break;
                }
                out.push((l.clone(), LeaseEnd::LenderNeeds { need, kept }));
                kept += l.amount;
            }
        }
        out
    }
}

impl Allocation {
    pub(crate) fn add(&mut self, res: LeaseResource, v: f64) {
        match res {
            LeaseResource::Cpu => self.cpu_cores += v,
            LeaseResource::Memory => self.memory_mib += v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn party(id: &str, cpu: f64, keep: f64) -> LeaseParty {
        LeaseParty {
            vm_id: id.into(),
            allocated: Allocation { cpu_cores: cpu, memory_mib: 2048.0 },
            limits: Allocation { cpu_cores: 8.0, memory_mib: 8192.0 },
            keep: Allocation { cpu_cores: keep, memory_mib: 2048.0 },
            may_lend: true,
            may_borrow: true,
            max_borrow: Allocation { cpu_cores: 4.0, memory_mib: 1024.0 },
            max_lease_ms: 1_800_000,
        }
    }

    fn cpu(id: &str, lender: Option<&str>, borrower: &str, amount: f64, deadline: u64) -> Lease {
        Lease {
            id: id.into(),
            resource: LeaseResource::Cpu,
            amount,
            lender: lender.map(String::from),
            borrower: borrower.into(),
            granted_at_ms: 0,
            deadline_ms: deadline,
            reason: "test".into(),
        }
    }

    fn host(vms: &[LeaseParty]) -> LeaseHost<'_> {
        LeaseHost { capacity: Allocation { cpu_cores: 8.0, memory_mib: 8192.0 }, memory_reserve_mib: 1024.0, vms }
    }

    #[test]
    fn a_lease_moves_quota_and_keeps_the_lenders_floor() {
        let vms = [party("a", 4.0, 1.0), party("b", 2.0, 1.0)];
        let h = host(&vms);
        let mut book = LeaseBook::default();
        book.admit(cpu("l1", Some("a"), "b", 2.0, 1000), &h, 0).unwrap();
        assert_eq!(book.effective("a", vms[0].allocated, 0).cpu_cores, 2.0);
        assert_eq!(book.effective("b", vms[1].allocated, 0).cpu_cores, 4.0);
        // a keeps 2, must keep 1: 1.5 more would leave 0.5.
        let e = book.check(&cpu("l2", Some("a"), "b", 1.5, 1000), &h, 0).unwrap_err();
        assert!(matches!(e, LeaseRefusal::LenderFloor { .. }) && e.to_string().contains("below the 1.00"), "{e}");
        book.admit(cpu("l2", Some("a"), "b", 1.0, 1000), &h, 0).unwrap();
        // The borrowing limit (4 cores) binds: 3 borrowed + 1.5.
        let vms2 = [party("a", 4.0, 0.0), party("b", 2.0, 1.0), party("c", 3.0, 0.0)];
        let e = book.check(&cpu("l3", Some("c"), "b", 1.5, 1000), &host(&vms2), 0).unwrap_err();
        assert!(matches!(e, LeaseRefusal::BorrowerLimit { what: "its borrowing limit", .. }), "{e}");
        // After the deadline they hold nothing.
        assert_eq!(book.effective("b", vms[1].allocated, 1000).cpu_cores, 2.0);
    }

    #[test]
    fn the_host_is_never_overcommitted_and_memory_comes_only_from_the_reserve() {
        let vms = [party("a", 3.0, 1.0), party("b", 3.0, 1.0)];
        let h = host(&vms);
        let mut book = LeaseBook::default();
        // 6 of 8 cores allocated: the host lends 2, not 2.5.
        assert!(matches!(book.check(&cpu("h1", None, "a", 2.5, 10), &h, 0), Err(LeaseRefusal::Overcommit { .. })));
        book.admit(cpu("h1", None, "a", 2.0, 10), &h, 0).unwrap();
        assert!(matches!(book.check(&cpu("h2", None, "b", 0.1, 10), &h, 0), Err(LeaseRefusal::Overcommit { .. })));
        let mem = |id: &str, lender: Option<&str>, to: &str, amount: f64| Lease {
            resource: LeaseResource::Memory,
            ..cpu(id, lender, to, amount, 10)
        };
        let e = book.check(&mem("m0", Some("a"), "b", 100.0), &h, 0).unwrap_err();
        assert!(e.to_string().contains("only from the host's reserve"), "{e}");
        book.admit(mem("m1", None, "b", 1000.0), &h, 0).unwrap();
        let e = book.check(&mem("m2", None, "a", 100.0), &h, 0).unwrap_err();
        assert!(matches!(e, LeaseRefusal::Reserve { .. }), "{e}");
        book.admit(mem("m2", None, "a", 24.0), &h, 0).unwrap();
    }

    #[test]
    fn bad_leases_are_named() {
        let vms = [party("a", 4.0, 1.0), party("b", 2.0, 1.0)];
        let h = host(&vms);
        let book = LeaseBook::default();
        for (l, what) in [
            (cpu("", Some("a"), "b", 1.0, 10), "must not be empty"),
            (cpu("x", Some("a"), "b", f64::NAN, 10), "finite"),
            (cpu("x", Some("a"), "b", -1.0, 10), "finite"),
            (cpu("x", Some("b"), "b", 1.0, 10), "itself"),
            (cpu("x", Some("a"), "b", 1.0, 0), "not after now"),
            (cpu("x", Some("a"), "zz", 1.0, 10), "zz is not on this host"),
            (cpu("x", Some("a"), "b", 1.0, 3_600_000), "longer than"),
        ] {
            let e = book.check(&l, &h, 0).unwrap_err().to_string();
            assert!(e.contains(what), "{e} should say {what}");
        }
        // 6 cores of its 8 + 3 borrowed (within its 4-core borrowing limit).
        let big = [party("a", 4.0, 1.0), party("b", 6.0, 1.0)];
        let e = book.check(&cpu("x", Some("a"), "b", 3.0, 10), &host(&big), 0).unwrap_err().to_string();
        assert!(e.contains("domain's maximum"), "{e}");
        let mut no = vms.clone();
        no[0].may_lend = false;
        assert!(matches!(
            book.check(&cpu("x", Some("a"), "b", 1.0, 10), &host(&no), 0),
            Err(LeaseRefusal::NotAllowed { what: "lend", .. })
        ));
    }

    #[test]
    fn leases_end_at_the_deadline_when_a_party_leaves_and_when_the_lender_needs_them() {
        let vms = [party("a", 4.0, 0.5), party("b", 1.0, 1.0), party("c", 1.0, 1.0)];
        let h = host(&vms);
        let mut book = LeaseBook::default();
        book.admit(cpu("old", Some("a"), "b", 1.0, 5000), &h, 0).unwrap();
        let mut newer = cpu("new", Some("a"), "c", 1.5, 5000);
        newer.granted_at_ms = 10;
        book.admit(newer, &h, 10).unwrap();
        let alloc = |v: &str| vms.iter().find(|p| p.vm_id == v).unwrap().allocated;
        // a keeps 1.5; needing 2 takes back the newest loan (1.5) only.
        let due = book.due(20, |_| true, alloc, |_, _| Some(2.0));
        assert_eq!(due.iter().map(|(l, _)| l.id.as_str()).collect::<Vec<_>>(), ["new"]);
        assert!(matches!(due[0].1, LeaseEnd::LenderNeeds { .. }));
        // Needing 4 takes back both.
        assert_eq!(book.due(20, |_| true, alloc, |_, _| Some(4.0)).len(), 2);
        assert!(book.due(20, |_| true, alloc, |_, _| Some(1.0)).is_empty());
        let gone = book.due(20, |v| v != "c", alloc, |_, _| None);
        assert_eq!(gone, vec![(book.get("new").unwrap().clone(), LeaseEnd::Gone { vm: "c".into() })]);
        assert_eq!(book.due(5000, |_| true, alloc, |_, _| None).len(), 2);
    }
}
