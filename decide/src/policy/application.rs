//! Application health: what a VM's guest says its applications feel, cross-checked against what
//! its host sees, and what presage learns from it per VM.
//!
//! A guest reports its applications' p99 latency against their SLO ([`AppSignal::latency_over_slo`]);
//! the host reports the VM's own contention (the share of its runnable time its vCPUs waited for a
//! physical CPU, plus swap and balloon pressure: [`AppSignal::host_contention`]). A VM *suffers*
//! only when both agree ([`Verdict::Suffering`]): a guest's claim of pain that its host does not
//! see is counted ([`Verdict::Unconfirmed`]) and changes nothing. That is the bound on a guest's
//! influence: guest data alone never moves a VM, lowers a host's level or marks a host as bad.
//!
//! From confirmed verdicts the [`AppHealthBook`] learns, per VM:
//! - its *tolerance*: the host utilisation above which it suffers (confirmed suffering at
//!   utilisation `u` lowers it to `u` less [`TOLERANCE_MARGIN`] at once, so the next pass already
//!   relieves it; health at a utilisation above it raises it a quarter of the way: one noisy
//!   report does not pin it low), within [`MIN_TOLERANCE`]..the policy's safe level. A host's level is
//!   the lowest tolerance of the VMs it holds, so a host whose VMs suffer is relieved below the
//!   point where they did, and no VM is placed where it would push a neighbour past its own;
//! - the hosts that hurt it (confirmed suffering there, within [`HURT_MEMORY_S`]) and those where
//!   it was healthy: the application scorer steers it away from the first and towards the second.
//!
//! Architecture invariant: pure. The caller passes the fleet (with each VM's latest signal) and
//! the time; nothing here reads a clock, does I/O or trusts a guest on its own.

use serde::Serialize;

use super::FleetView;

/// The host-side contention (the share of each vCPU's time spent runnable but waiting for a host
/// CPU, or swap pressure) at and above which the host agrees that a VM is being squeezed: 5 %,
/// where VMware's guidance starts to worry about a vCPU's ready time.
pub const CONTENTION_AGREES: f64 = 0.05;

/// The lowest tolerance one VM can impose on its host (a fraction of the host's CPU capacity):
/// the most capacity a suffering VM can keep idle around it.
pub const MIN_TOLERANCE: f64 = 0.5;

/// How far under the utilisation at which a VM suffered its tolerance is set.
pub const TOLERANCE_MARGIN: f64 = 0.02;

/// How long a host that hurt a VM is remembered as such.
pub const HURT_MEMORY_S: f64 = 6.0 * 3600.0;

/// How long a signal counts as current (older ones are not acted on).
pub const SIGNAL_FRESH_S: f64 = 900.0;

/// Signals closer together than this are one report seen twice (the daemon dates a report by
/// its age, which jitters between passes).
const SAME_SIGNAL_S: f64 = 0.5;

/// Hosts remembered per VM (the most recent).
const HOSTS_REMEMBERED: usize = 8;

/// One VM's latest application figures and its host's contention, as the agent reported them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct AppSignal {
    /// The worst of its applications' p99 latency over that application's SLO (1 = at the SLO).
    pub latency_over_slo: f64,
    /// What the host measured for the VM: the share of each vCPU's time spent runnable but
    /// waiting for a host CPU, or swap pressure, whichever is higher (0..1).
    pub host_contention: f64,
    /// The host it was measured on.
    pub measured_on: usize,
    /// When (the fleet's clock, seconds).
    pub at_s: f64,
}

/// What a signal says, once the host's view is taken into account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Within its SLO.
    Healthy,
    /// Over its SLO, and the host sees the contention that explains it.
    Suffering,
    /// Over its SLO by the guest's account only: counted, not acted on.
    Unconfirmed,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Suffering => "suffering",
            Verdict::Unconfirmed => "unconfirmed",
        }
    }
}

impl AppSignal {
    pub fn verdict(&self) -> Verdict {
        if self.latency_over_slo.is_nan() || self.latency_over_slo <= 1.0 {
            Verdict::Healthy
        } else if self.host_contention >= CONTENTION_AGREES {
            Verdict::Suffering
        } else {
            Verdict::Unconfirmed
        }
    }

    /// Whether the figures are usable at all (finite, in range): a guest's numbers are untrusted.
    pub fn is_valid(&self) -> bool {
        self.latency_over_slo.is_finite()
            && self.latency_over_slo >= 0.0
            && (0.0..=1.0).contains(&self.host_contention)
            && self.at_s.is_finite()
    }
}

/// What the application figures of one decision were (shown in its explanation).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct AppHealthFigures {
    pub latency_over_slo: f64,
    pub host_contention: f64,
    pub verdict: Verdict,
    /// The VM's learned tolerance (host utilisation), when one was learned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct HostMemory {
    host: usize,
    /// Last confirmed suffering there.
    hurt_s: Option<f64>,
    /// Last healthy report there.
    good_s: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct VmRecord {
    tolerance: Option<f64>,
    /// The last signal taken in (a signal is learned from once).
    seen_s: f64,
    last: Option<AppSignal>,
    hosts: Vec<HostMemory>,
    unconfirmed: u64,
}

/// What the policy has learned about each VM's application from its confirmed signals.
#[derive(Clone, Debug, Default)]
pub struct AppHealthBook {
    vms: Vec<VmRecord>,
    unconfirmed: u64,
}

impl AppHealthBook {
    /// Takes in every VM's signal that is new since the last call. `ceiling`: the policy's safe
    /// level, the highest a tolerance goes; `host_load`: each host's CPU utilisation as last
    /// observed (what the VMs reporting now ran under), the scale tolerances are kept on.
    pub fn observe(&mut self, fleet: &FleetView<'_>, ceiling: f64, host_load: &[f64]) {
        if self.vms.len() < fleet.vms.len() {
            self.vms.resize(fleet.vms.len(), VmRecord::default());
        }
        let floor = MIN_TOLERANCE.min(ceiling);
        for (vm, v) in fleet.vms.iter().enumerate() {
            let rec = &mut self.vms[vm];
            if !v.alive {
                if rec.last.is_some() || rec.tolerance.is_some() {
                    *rec = VmRecord::default();
                }
                continue;
            }
            let Some(s) = v.app.filter(|s| s.is_valid() && s.at_s > rec.seen_s + SAME_SIGNAL_S && s.measured_on < fleet.hosts.len()) else {
                continue;
            };
            rec.seen_s = s.at_s;
            rec.last = Some(s);
            let Some(u) = host_load.get(s.measured_on).map(|u| u.clamp(0.0, 1.0)) else { continue };
            let at = match rec.hosts.iter().position(|m| m.host == s.measured_on) {
                Some(i) => i,
                None => {
                    if rec.hosts.len() == HOSTS_REMEMBERED {
                        // Forget the host heard of least recently.
                        let oldest = (0..rec.hosts.len())
                            .min_by(|&a, &b| last_heard(&rec.hosts[a]).total_cmp(&last_heard(&rec.hosts[b])))
                            .unwrap_or(0);
                        rec.hosts.swap_remove(oldest);
                    }
                    rec.hosts.push(HostMemory { host: s.measured_on, ..HostMemory::default() });
                    rec.hosts.len() - 1
                }
            };
            match s.verdict() {
                Verdict::Suffering => {
                    rec.hosts[at].hurt_s = Some(s.at_s);
                    let t = rec.tolerance.unwrap_or(ceiling);
                    rec.tolerance = Some(t.min(u - TOLERANCE_MARGIN).clamp(floor, ceiling));
                }
                Verdict::Healthy => {
                    rec.hosts[at].good_s = Some(s.at_s);
                    if let Some(t) = rec.tolerance
                        && u > t
                    {
                        rec.tolerance = Some((t + 0.25 * (u - t)).clamp(floor, ceiling));
                    }
                }
                Verdict::Unconfirmed => {
                    rec.unconfirmed += 1;
                    self.unconfirmed += 1;
                }
            }
        }
    }

    /// The host utilisation above which `vm` suffers, once learned.
    pub fn tolerance(&self, vm: usize) -> Option<f64> {
        self.vms.get(vm).and_then(|r| r.tolerance)
    }

    /// Whether `vm`'s latest signal, current at `now`, is confirmed suffering.
    pub fn suffering(&self, vm: usize, now: f64) -> bool {
        self.latest(vm, now).is_some_and(|s| s.verdict() == Verdict::Suffering)
    }

    /// `vm`'s latest signal, when it is current at `now`.
    pub fn latest(&self, vm: usize, now: f64) -> Option<AppSignal> {
        self.vms.get(vm).and_then(|r| r.last).filter(|s| now - s.at_s <= SIGNAL_FRESH_S)
    }

    /// Whether `host` hurt `vm` (confirmed) within [`HURT_MEMORY_S`] of `now`.
    pub fn hurt(&self, vm: usize, host: usize, now: f64) -> bool {
        self.memory(vm, host).and_then(|m| m.hurt_s).is_some_and(|t| now - t <= HURT_MEMORY_S)
    }

    /// Whether `vm` was last healthy on `host` (and not hurt there since).
    pub fn was_good(&self, vm: usize, host: usize) -> bool {
        self.memory(vm, host).is_some_and(|m| m.good_s.is_some_and(|g| m.hurt_s.is_none_or(|h| g > h)))
    }

    /// Guest claims of pain the hosts did not confirm, in all and for `vm`.
    pub fn unconfirmed(&self) -> u64 {
        self.unconfirmed
    }

    pub fn unconfirmed_for(&self, vm: usize) -> u64 {
        self.vms.get(vm).map_or(0, |r| r.unconfirmed)
    }

    /// The figures an explanation shows for `vm`, when it has a current signal.
    pub fn figures(&self, vm: usize, now: f64) -> Option<AppHealthFigures> {
        let s = self.latest(vm, now)?;
        Some(AppHealthFigures {
            latency_over_slo: s.latency_over_slo,
            host_contention: s.host_contention,
            verdict: s.verdict(),
            tolerance: self.tolerance(vm),
        })
    }

    /// Re-indexes the book for a fleet numbered anew (the daemon's fleet between passes).
    pub fn renumber(&mut self, map: &super::Renumbering) {
        let mut vms = map.vms_of(&self.vms);
        for rec in &mut vms {
            rec.hosts.retain_mut(|m| match map.host(m.host) {
                Some(h) => {
                    m.host = h;
                    true
                }
                None => false,
            });
            if let Some(s) = &mut rec.last {
                match map.host(s.measured_on) {
                    Some(h) => s.measured_on = h,
                    None => rec.last = None,
                }
            }
        }
        self.vms = vms;
    }

    fn memory(&self, vm: usize, host: usize) -> Option<&HostMemory> {
        self.vms.get(vm)?.hosts.iter().find(|m| m.host == host)
    }
}

fn last_heard(m: &HostMemory) -> f64 {
    m.hurt_s.unwrap_or(f64::MIN).max(m.good_s.unwrap_or(f64::MIN))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::power::HP_ML110_G5;
    use crate::policy::{HostView, VmView};

    fn fleet_with(signal: Option<AppSignal>) -> (Vec<HostView>, Vec<VmView>) {
        let hosts: Vec<HostView> = (0..2).map(|_| HostView::new(2, 1000.0, 4096.0, 100.0, HP_ML110_G5)).collect();
        let mut v = VmView::unplaced(1, 1000.0, 512.0);
        v.host = Some(0);
        v.app = signal;
        (hosts, vec![v])
    }

    /// A signal, and the load the policy reckons its host (host 0) carries.
    fn signal(latency_over_slo: f64, host_contention: f64, load: f64, at_s: f64) -> (AppSignal, f64) {
        (AppSignal { latency_over_slo, host_contention, measured_on: 0, at_s }, load)
    }

    fn observe(book: &mut AppHealthBook, (s, load): (AppSignal, f64)) {
        let (hosts, vms) = fleet_with(Some(s));
        book.observe(&FleetView { now_s: s.at_s, hosts: &hosts, vms: &vms }, 1.0, &[load, 0.0]);
    }

    #[test]
    fn a_guest_claim_the_host_does_not_confirm_changes_nothing() {
        let mut book = AppHealthBook::default();
        for t in 1..20 {
            // Ten times over its SLO, but its vCPUs never wait: the host sees no contention.
            observe(&mut book, signal(10.0, 0.0, 0.95, t as f64 * 60.0));
        }
        assert_eq!(book.tolerance(0), None);
        assert!(!book.suffering(0, 20.0 * 60.0));
        assert!(!book.hurt(0, 0, 20.0 * 60.0));
        assert_eq!(book.unconfirmed_for(0), 19);
    }

    #[test]
    fn confirmed_suffering_teaches_the_tolerance_and_marks_the_host() {
        let mut book = AppHealthBook::default();
        observe(&mut book, signal(2.0, 0.4, 0.9, 60.0));
        // Just under where it suffered.
        assert!((book.tolerance(0).unwrap() - (0.9 - TOLERANCE_MARGIN)).abs() < 1e-12);
        // Suffering again at a higher load teaches nothing new; at a lower one, it does.
        observe(&mut book, signal(2.0, 0.4, 0.95, 90.0));
        assert!((book.tolerance(0).unwrap() - (0.9 - TOLERANCE_MARGIN)).abs() < 1e-12);
        observe(&mut book, signal(2.0, 0.4, 0.9, 120.0));
        assert!((book.tolerance(0).unwrap() - (0.9 - TOLERANCE_MARGIN)).abs() < 1e-12);
        assert!(book.suffering(0, 130.0));
        assert!(book.hurt(0, 0, 130.0));
        assert!(!book.hurt(0, 1, 130.0));
        // Remembered as a bad host for HURT_MEMORY_S, not for ever.
        assert!(!book.hurt(0, 0, 120.0 + HURT_MEMORY_S + 1.0));
        // A signal seen once is learned from once.
        let (hosts, vms) = fleet_with(Some(signal(2.0, 0.4, 0.9, 120.0).0));
        book.observe(&FleetView { now_s: 500.0, hosts: &hosts, vms: &vms }, 1.0, &[0.5, 0.0]);
        assert!((book.tolerance(0).unwrap() - 0.88).abs() < 1e-12);
        // Healthy at a higher utilisation than the tolerance: it relaxes a quarter of the way.
        observe(&mut book, signal(0.5, 0.4, 0.96, 600.0));
        assert!((book.tolerance(0).unwrap() - 0.90).abs() < 1e-12);
        assert!(book.was_good(0, 0));
    }

    #[test]
    fn tolerance_stays_within_its_bounds_and_bad_figures_are_ignored() {
        let mut book = AppHealthBook::default();
        for t in 1..50 {
            observe(&mut book, signal(50.0, 1.0, 0.0, t as f64));
        }
        assert_eq!(book.tolerance(0), Some(MIN_TOLERANCE));
        let mut other = AppHealthBook::default();
        for bad in [signal(f64::NAN, 0.5, 0.9, 1.0), signal(2.0, 1.5, 0.9, 2.0), signal(2.0, 0.5, 0.9, f64::INFINITY)] {
            observe(&mut other, bad);
        }
        assert_eq!(other.tolerance(0), None);
        assert!(other.latest(0, 3.0).is_none() && other.latest(0, 2.0).is_none());
    }

    #[test]
    fn a_renumbered_fleet_keeps_what_was_learned_per_vm_and_host() {
        let mut book = AppHealthBook::default();
        observe(&mut book, signal(2.0, 0.4, 0.9, 60.0));
        let t = book.tolerance(0);
        // VM 0 becomes VM 1 (a VM arrived before it); host 0 becomes host 1.
        let map = crate::policy::Renumbering::between(&["vm-a"], &["vm-new", "vm-a"], &["h0", "h1"], &["h1", "h0"]);
        book.renumber(&map);
        assert_eq!((book.tolerance(0), book.tolerance(1)), (None, t));
        assert!(book.hurt(1, 1, 61.0) && !book.hurt(1, 0, 61.0));
        assert_eq!(book.latest(1, 61.0).map(|s| s.measured_on), Some(1));
    }
}
