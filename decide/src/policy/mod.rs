//! The consolidation policy core: the fleet as a policy sees it ([`FleetView`]), the decisions a
//! policy returns ([`Migration`]), and the [`ConsolidationPolicy`] interface that both the
//! coordinator and the trace-replay simulator drive.
//!
//! Architecture invariant: nothing in this module does I/O, reads a clock or draws random
//! numbers; the caller passes the time and the state, the policy returns decisions.

pub mod application;
pub mod classic;
pub mod learned;
pub mod power;
pub mod presage;
pub mod stats;

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

pub use self::power::PowerModel;

/// How many utilisation samples a VM's history keeps (CloudSim's `PowerVm.HISTORY_LENGTH`).
pub const HISTORY_LEN: usize = 30;

/// A VM's CPU utilisation history as fractions of its capacity, newest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UtilisationHistory {
    values: [f64; HISTORY_LEN],
    len: usize,
}

impl UtilisationHistory {
    pub fn push(&mut self, utilisation: f64) {
        self.values.copy_within(0..HISTORY_LEN - 1, 1);
        self.values[0] = utilisation;
        self.len = (self.len + 1).min(HISTORY_LEN);
    }

    /// Newest first.
    pub fn as_slice(&self) -> &[f64] {
        &self.values[..self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One host as a policy sees it.
#[derive(Clone, Debug)]
pub struct HostView {
    pub pes: u32,
    /// Capacity of one physical core (MIPS or MHz; the same unit as the VMs' demand).
    pub pe_mips: f64,
    pub total_mips: f64,
    pub memory_mb: f64,
    /// Bandwidth a migration may use, MB/s (CloudSim: half the NIC).
    pub migration_mb_per_s: f64,
    pub power: PowerModel,
    /// CPU in use at the last observation (what the agent last reported), in capacity units.
    pub observed_mips: f64,
    /// Resident VMs in arrival order, including VMs migrating in.
    pub vms: Vec<usize>,
    /// VMs migrating in, with the capacity they hold here meanwhile.
    pub migrating_in: Vec<(usize, f64)>,
    /// False for hosts being drained or in maintenance.
    pub schedulable: bool,
    /// CPU held by hard reservations for VMs on their way here.
    pub reserved_mips: f64,
    /// CPU the host spends besides its VMs (its own processes, a noisy tenant outside presage),
    /// in capacity units: part of its demand that no move can take away.
    pub other_mips: f64,
}

impl HostView {
    /// An empty, schedulable host of the given shape.
    pub fn new(pes: u32, pe_mips: f64, memory_mb: f64, migration_mb_per_s: f64, power: PowerModel) -> HostView {
        HostView {
            pes,
            pe_mips,
            total_mips: pe_mips * pes as f64,
            memory_mb,
            migration_mb_per_s,
            power,
            observed_mips: 0.0,
            vms: Vec::new(),
            migrating_in: Vec::new(),
            schedulable: true,
            reserved_mips: 0.0,
            other_mips: 0.0,
        }
    }

    pub fn observed_utilisation(&self) -> f64 {
        let u = self.observed_mips / self.total_mips;
        if u > 1.0 && u < 1.01 { 1.0 } else { u }
    }

    pub fn is_migrating_in(&self, vm: usize) -> bool {
        self.migrating_in.iter().any(|(v, _)| *v == vm)
    }
}

/// One VM as a policy sees it.
#[derive(Clone, Debug)]
pub struct VmView {
    /// False once the VM has ended; such VMs are never placed or moved.
    pub alive: bool,
    /// The host it runs on (the source while a migration is in flight).
    pub host: Option<usize>,
    pub pes: u32,
    /// Capacity of one vCPU.
    pub mips: f64,
    /// Memory that a migration copies, MB.
    pub ram_mb: f64,
    /// CPU demand now, in capacity units.
    pub demand_mips: f64,
    /// The CPU request its host's scheduler holds for it: its demand when the host last
    /// allocated CPU (at creation, its full size).
    pub scheduled_mips: f64,
    /// Memory the VM needs reserved on a host, MB.
    pub memory_request_mb: f64,
    pub history: UtilisationHistory,
    pub in_migration: bool,
    /// The agent's calibrated forecast of its CPU utilisation (fractions of its capacity) for
    /// the next steps, when it has one.
    pub forecast: Option<crate::demand::Forecast>,
    /// The agent's p90 forecast of the memory it will use, MB, per horizon (1..=12), when it has
    /// one: where memory is counted by use (`memory_request_mb` follows use), what the VM will
    /// hold within the horizon counts, not only what it holds now.
    pub memory_p90_mb: Option<[f32; crate::demand::MAX_HORIZON]>,
    /// Its guest's latest application figures with its host's contention, when it reports them.
    pub app: Option<application::AppSignal>,
}

impl VmView {
    /// A VM of the given shape, not yet placed, with no demand or history yet.
    pub fn unplaced(pes: u32, mips: f64, ram_mb: f64) -> VmView {
        VmView {
            alive: true,
            host: None,
            pes,
            mips,
            ram_mb,
            demand_mips: 0.0,
            scheduled_mips: 0.0,
            memory_request_mb: 0.0,
            history: UtilisationHistory::default(),
            in_migration: false,
            forecast: None,
            memory_p90_mb: None,
            app: None,
        }
    }

    pub fn capacity_mips(&self) -> f64 {
        self.mips * self.pes as f64
    }

    /// Seconds a live migration of this VM takes over `mb_per_s`.
    pub fn migration_seconds(&self, mb_per_s: f64) -> f64 {
        self.ram_mb / mb_per_s
    }
}

/// The whole fleet at one instant.
#[derive(Clone, Copy, Debug)]
pub struct FleetView<'a> {
    /// Seconds since the start of the run (or the epoch, in the daemon).
    pub now_s: f64,
    pub hosts: &'a [HostView],
    pub vms: &'a [VmView],
}

/// Why a policy moves a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "host")]
pub enum MoveReason {
    /// Its host is (predicted to be) overloaded.
    Overload(usize),
    /// Its host is under-used and is being emptied.
    Underload(usize),
    /// Its host is being drained for maintenance.
    Drain(usize),
    /// A required dependency of it, or of a VM it serves, is unmet where it runs (its host).
    Repair(usize),
}

/// One decided live migration.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Migration {
    pub vm: usize,
    pub to: usize,
    pub reason: MoveReason,
}

/// A placement and consolidation policy. Implementations are pure: the same view and the same
/// internal state give the same decisions.
pub trait ConsolidationPolicy: Send {
    fn name(&self) -> String;

    /// Chooses a host for `vm`, which is in `fleet.vms` without a host and with its requested
    /// size as demand. `None` when no host can take it.
    fn place(&mut self, fleet: &FleetView<'_>, vm: usize) -> Option<usize>;

    /// The live migrations to start now, in order.
    fn optimise(&mut self, fleet: &FleetView<'_>) -> Vec<Migration>;

    /// Whether the policy reads `VmView::forecast` (the simulator forecasts only for those).
    fn wants_forecasts(&self) -> bool {
        false
    }

    /// Why each of the last pass's moves was decided (policies that explain themselves).
    fn explanations(&self) -> &[presage::MoveExplanation] {
        &[]
    }

    /// The fleet's VMs and hosts were numbered differently from the last pass's (the daemon's
    /// fleet changes between passes): carry what the policy keeps per VM and host across.
    fn renumber(&mut self, _map: &Renumbering) {}

    /// What the policy learned of the VMs' applications, for policies that learn it.
    fn application_book(&self) -> Option<&application::AppHealthBook> {
        None
    }

    /// How often a learned scorer's guardrail let its model decide (policies without one: `None`).
    fn learned_counts(&self) -> Option<learned::GuardCounts> {
        None
    }
}

/// How the last pass's VM and host indices map onto this pass's (`None`: gone).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Renumbering {
    pub vms: Vec<Option<usize>>,
    pub hosts: Vec<Option<usize>>,
    /// How many VMs and hosts the new numbering has.
    pub vm_count: usize,
    pub host_count: usize,
}

impl Renumbering {
    /// From the last pass's ids to this pass's.
    pub fn between<K: Eq + std::hash::Hash>(old_vms: &[K], new_vms: &[K], old_hosts: &[K], new_hosts: &[K]) -> Renumbering {
        fn map<K: Eq + std::hash::Hash>(old: &[K], new: &[K]) -> Vec<Option<usize>> {
            let at: std::collections::HashMap<&K, usize> = new.iter().enumerate().map(|(i, k)| (k, i)).collect();
            old.iter().map(|k| at.get(k).copied()).collect()
        }
        Renumbering { vms: map(old_vms, new_vms), hosts: map(old_hosts, new_hosts), vm_count: new_vms.len(), host_count: new_hosts.len() }
    }

    /// Whether nothing changed.
    pub fn is_identity(&self) -> bool {
        self.vms.len() == self.vm_count
            && self.hosts.len() == self.host_count
            && self.vms.iter().enumerate().all(|(i, v)| *v == Some(i))
            && self.hosts.iter().enumerate().all(|(i, h)| *h == Some(i))
    }

    /// `per_vm` (indexed the old way) indexed the new way; VMs new to the fleet get `T::default()`.
    pub fn vms_of<T: Default + Clone>(&self, per_vm: &[T]) -> Vec<T> {
        remap(per_vm, &self.vms, self.vm_count)
    }

    pub fn hosts_of<T: Default + Clone>(&self, per_host: &[T]) -> Vec<T> {
        remap(per_host, &self.hosts, self.host_count)
    }

    pub fn host(&self, old: usize) -> Option<usize> {
        self.hosts.get(old).copied().flatten()
    }
}

fn remap<T: Default + Clone>(items: &[T], map: &[Option<usize>], count: usize) -> Vec<T> {
    let mut out = vec![T::default(); count];
    for (old, item) in items.iter().enumerate() {
        if let Some(Some(new)) = map.get(old)
            && *new < count
        {
            out[*new] = item.clone();
        }
    }
    out
}

/// How hosts draw power while a policy runs: CloudSim's NPA keeps every host at full power.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerMode {
    /// Power follows load (DVFS-capable hosts, idle hosts switched off).
    FollowsLoad,
    /// Every host at full power all the time.
    AlwaysFull,
}

/// A policy by name, as the CLI and configuration spell it: `thr-mmt-0.8`, `iqr-mmt-1.5`,
/// `mad-mmt-2.5`, `lr-mmt-1.2`, `lrr-mmt-1.2`, `dvfs`, `npa`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PolicySpec {
    /// Migrating policy: overload detector + minimum-migration-time selection + PABFD.
    Classic(classic::Detector),
    /// First fit, never migrates; power follows load.
    Dvfs,
    /// First fit, never migrates; hosts always at full power.
    Npa,
    /// presage's own policy (forecasts, ensemble, cost/benefit gate) with its default settings.
    Presage,
    /// presage without the dependency scorer and rule, for side-by-side runs over an ecosystem.
    PresageNoDeps,
    /// presage without application awareness (no application scorer, no learned tolerances),
    /// for side-by-side runs with the interference model.
    PresageNoApp,
}

impl PolicySpec {
    /// The five CloudSim baselines with their published parameters, then DVFS and NPA.
    pub fn all_classic() -> Vec<PolicySpec> {
        use classic::Detector::*;
        vec![
            PolicySpec::Classic(Thr(0.8)),
            PolicySpec::Classic(Iqr(1.5)),
            PolicySpec::Classic(Mad(2.5)),
            PolicySpec::Classic(Lr(1.2)),
            PolicySpec::Classic(Lrr(1.2)),
            PolicySpec::Dvfs,
            PolicySpec::Npa,
        ]
    }

    /// presage's policy or one of its variants.
    pub fn is_presage(self) -> bool {
        matches!(self, PolicySpec::Presage | PolicySpec::PresageNoDeps | PolicySpec::PresageNoApp)
    }

    pub fn power_mode(self) -> PowerMode {
        match self {
            PolicySpec::Npa => PowerMode::AlwaysFull,
            _ => PowerMode::FollowsLoad,
        }
    }

    pub fn build(self) -> Box<dyn ConsolidationPolicy> {
        self.build_with(&presage::PresageConfig::default())
    }

    /// Builds the policy; presage's takes `presage` as its settings.
    pub fn build_with(self, presage: &presage::PresageConfig) -> Box<dyn ConsolidationPolicy> {
        self.build_with_extras(presage, &PolicyExtras::default())
    }

    /// [`build_with`](Self::build_with), presage's variants with `extras` plugged in.
    pub fn build_with_extras(self, presage: &presage::PresageConfig, extras: &PolicyExtras) -> Box<dyn ConsolidationPolicy> {
        match self {
            PolicySpec::Classic(d) => Box::new(classic::ClassicPolicy::migrating(d)),
            PolicySpec::Dvfs | PolicySpec::Npa => Box::new(classic::ClassicPolicy::static_first_fit(self.to_string())),
            PolicySpec::Presage => Box::new(presage::PresagePolicy::new(presage.clone()).with_extras(extras)),
            PolicySpec::PresageNoDeps => {
                Box::new(presage::PresagePolicy::new(presage.clone()).labelled("presage-nodeps").with_extras(extras))
            }
            PolicySpec::PresageNoApp => {
                Box::new(presage::PresagePolicy::new(self.presage_config(presage)).labelled("presage-noapp").with_extras(extras))
            }
        }
    }

    /// presage's settings as this variant runs them (`presage-noapp`: application awareness off).
    pub fn presage_config(self, presage: &presage::PresageConfig) -> presage::PresageConfig {
        let mut cfg = presage.clone();
        if self == PolicySpec::PresageNoApp {
            cfg.application_aware = false;
            cfg.weights.application = 0.0;
        }
        cfg
    }
}

impl fmt::Display for PolicySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicySpec::Classic(d) => write!(f, "{d}-MMT-{}", d.parameter()),
            PolicySpec::Dvfs => f.write_str("DVFS"),
            PolicySpec::Npa => f.write_str("NPA"),
            PolicySpec::Presage => f.write_str("presage"),
            PolicySpec::PresageNoDeps => f.write_str("presage-nodeps"),
            PolicySpec::PresageNoApp => f.write_str("presage-noapp"),
        }
    }
}

/// What a process plugs into presage's policy besides its settings: parts that come from files
/// (a loaded model) or that record (the simulator's candidate log).
#[derive(Clone, Default)]
pub struct PolicyExtras {
    /// The learned shortfall model (`[policy.presage] learned_model`, loaded).
    pub shortfall: Option<std::sync::Arc<dyn learned::ShortfallModel>>,
    /// Where shortlists' rows go (training data).
    pub candidate_log: Option<std::sync::Arc<dyn learned::CandidateLog>>,
}

/// A policy name that is not one of the known ones.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown policy {given:?}: expected one of presage, presage-nodeps, presage-noapp, thr-mmt-<threshold>, iqr-mmt-<safety>, mad-mmt-<safety>, lr-mmt-<safety>, lrr-mmt-<safety>, dvfs, npa, or all (the classic ones)"
)]
pub struct UnknownPolicy {
    pub given: String,
}

impl FromStr for PolicySpec {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use classic::Detector;
        let err = || UnknownPolicy { given: s.to_string() };
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "dvfs" => return Ok(PolicySpec::Dvfs),
            "npa" => return Ok(PolicySpec::Npa),
            "presage" => return Ok(PolicySpec::Presage),
            "presage-nodeps" => return Ok(PolicySpec::PresageNoDeps),
            "presage-noapp" => return Ok(PolicySpec::PresageNoApp),
            _ => {}
        }
        let parts: Vec<&str> = lower.split('-').collect();
        let (name, param) = match parts.as_slice() {
            [name, "mmt", p] => (*name, p.parse::<f64>().map_err(|_| err())?),
            [name, "mmt"] | [name] => (*name, f64::NAN),
            _ => return Err(err()),
        };
        let pick = |default: f64| if param.is_nan() { default } else { param };
        let d = match name {
            "thr" => Detector::Thr(pick(0.8)),
            "iqr" => Detector::Iqr(pick(1.5)),
            "mad" => Detector::Mad(pick(2.5)),
            "lr" => Detector::Lr(pick(1.2)),
            "lrr" => Detector::Lrr(pick(1.2)),
            _ => return Err(err()),
        };
        if !d.parameter().is_finite() || d.parameter() <= 0.0 {
            return Err(err());
        }
        Ok(PolicySpec::Classic(d))
    }
}

/// Parses `a,b,c`, where `all` stands for every classic policy (`all,presage` adds presage's).
pub fn parse_policy_list(s: &str) -> Result<Vec<PolicySpec>, UnknownPolicy> {
    let mut out = Vec::new();
    for p in s.split(',').filter(|p| !p.trim().is_empty()) {
        if p.trim().eq_ignore_ascii_case("all") {
            out.extend(PolicySpec::all_classic());
        } else {
            out.push(p.parse()?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names_round_trip() {
        for p in PolicySpec::all_classic() {
            let again: PolicySpec = p.to_string().parse().unwrap();
            assert_eq!(again, p);
        }
        assert_eq!("iqr".parse::<PolicySpec>().unwrap().to_string(), "IQR-MMT-1.5");
        assert!("foo-mmt-1".parse::<PolicySpec>().is_err());
        assert!("thr-mmt-x".parse::<PolicySpec>().is_err());
        assert!("thr-mmt--1".parse::<PolicySpec>().is_err());
        assert_eq!(parse_policy_list("all").unwrap().len(), 7);
    }

    #[test]
    fn history_is_newest_first_and_bounded() {
        let mut h = UtilisationHistory::default();
        for i in 0..40 {
            h.push(i as f64);
        }
        assert_eq!(h.len(), HISTORY_LEN);
        assert_eq!(h.as_slice()[0], 39.0);
        assert_eq!(h.as_slice()[HISTORY_LEN - 1], 10.0);
    }
}
