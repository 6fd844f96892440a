//! The sizing policies an operator writes: limits, thresholds and borrowing rules per VM or group
//! (the coordinator's `[sizing]` section), validated field by field, and resolved to one
//! [`SizingRules`] per VM (defaults, then the first group whose pattern names the VM, then the
//! VM's own entry).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What is wrong with a sizing policy: the field (`group[1].max_lease_s`) and why.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("sizing policy: {field}: {problem}")]
pub struct RulesError {
    pub field: String,
    pub problem: String,
}

/// Everything sizing needs to know about one VM's policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SizingRules {
    /// Resize this VM automatically (off: only operators resize it; it may still borrow and lend).
    pub auto_resize: bool,
    /// Lowest CPU allocation, cores.
    pub min_cpu_cores: f64,
    /// Highest CPU allocation, cores (the domain's maximum binds too).
    pub max_cpu_cores: Option<f64>,
    /// Lowest memory, MiB.
    pub min_memory_mib: f64,
    /// Highest memory, MiB (the domain's maximum binds too).
    pub max_memory_mib: Option<f64>,
    /// Grow when the forecast's upper quantile over the horizon exceeds this share of the
    /// allocation.
    pub grow_at: f64,
    /// The allocation is the forecast's upper quantile times this margin (never less).
    pub margin: f64,
    /// Shrink CPU only when the upper quantile times the margin stays under this share of the
    /// allocation …
    pub cpu_shrink_at: f64,
    /// … for this many cycles in a row …
    pub cpu_shrink_after_cycles: u32,
    /// … and by at most this share of the allocation in one cycle. CPU shrinks sooner than
    /// memory: a VM short of CPU saturates and is given more the next cycle.
    pub cpu_max_shrink_step: f64,
    /// The same for memory, slower: a balloon gives memory back slowly, and a guest short of
    /// memory fails (OOM) rather than slows.
    pub memory_shrink_at: f64,
    pub memory_shrink_after_cycles: u32,
    pub memory_max_shrink_step: f64,
    /// At most this many times the allocation is given in one cycle (at least one grain more).
    pub max_grow_factor: f64,
    /// A VM that used this share of its allocation in a cycle was saturated: its floor rises.
    pub saturated_at: f64,
    /// How long a raised floor holds, seconds.
    pub floor_hold_s: u64,
    /// The CPU allocation never goes below the most the VM used within this many seconds.
    pub cpu_peak_lookback_s: u64,
    /// The memory allocation never goes below the most it used within this many seconds.
    pub memory_peak_lookback_s: u64,
    /// Forecast steps (5 min) the resize rule looks ahead for CPU (1..=12). Short: a CPU quota
    /// changes within a cycle, and a VM that needs more than it was given saturates and is
    /// given more (a resize, or a lease from a neighbour) the next cycle.
    pub cpu_horizon_steps: usize,
    /// Forecast steps the resize rule looks ahead for memory (1..=12). Long: a balloon gives
    /// memory back slowly and a guest short of it fails (OOM) rather than slows.
    pub memory_horizon_steps: usize,
    /// Forecast steps a lease looks ahead: a borrower is about to exceed its allocation within
    /// them; a lender must not need what it lends within them.
    pub lease_horizon_steps: usize,
    /// May lend CPU to neighbours.
    pub may_lend: bool,
    /// A lender keeps at least the most it used within this many seconds.
    pub lend_lookback_s: u64,
    /// May borrow from neighbours.
    pub may_borrow: bool,
    /// Most CPU it may borrow at once, cores.
    pub max_borrow_cpu_cores: f64,
    /// Most memory it may borrow from the host's reserve, MiB.
    pub max_borrow_memory_mib: f64,
    /// Longest lease it takes part in, seconds.
    pub max_lease_s: u64,
    /// Borrowers with a higher priority are served first (critical VMs: 100).
    pub priority: i32,
    /// What lending one core for an hour costs this VM (lenders that cost least lend first).
    pub lend_cost: f64,
}

impl Default for SizingRules {
    fn default() -> SizingRules {
        SizingRules {
            auto_resize: true,
            min_cpu_cores: 0.05,
            max_cpu_cores: None,
            min_memory_mib: 256.0,
            max_memory_mib: None,
            grow_at: 0.9,
            margin: 1.25,
            cpu_shrink_at: 0.85,
            cpu_shrink_after_cycles: 3,
            cpu_max_shrink_step: 0.5,
            memory_shrink_at: 0.6,
            memory_shrink_after_cycles: 6,
            memory_max_shrink_step: 0.25,
            max_grow_factor: 4.0,
            saturated_at: 0.95,
            floor_hold_s: 3600,
            cpu_peak_lookback_s: 1800,
            memory_peak_lookback_s: 3600,
            cpu_horizon_steps: 3,
            memory_horizon_steps: 12,
            lease_horizon_steps: 3,
            may_lend: true,
            lend_lookback_s: 24 * 3600,
            may_borrow: true,
            max_borrow_cpu_cores: 4.0,
            max_borrow_memory_mib: 2048.0,
            max_lease_s: 1800,
            priority: 0,
            lend_cost: 1.0,
        }
    }
}

/// Allocation grains: CPU in hundredths of a core, memory in 64 MiB (changes smaller than one
/// grain are not made).
pub const CPU_GRAIN: f64 = 0.05;
pub const MEMORY_GRAIN_MIB: f64 = 64.0;

/// `v` rounded down to a multiple of `grain` (within 1e-4 of a grain under a multiple
/// counts as it: forecasts are `f32`).
pub fn floor_to(v: f64, grain: f64) -> f64 {
    (v / grain + 1e-4).floor() * grain
}

/// `v` rounded up to a multiple of `grain` (within 1e-4 of a grain over counts as the
/// multiple).
pub fn ceil_to(v: f64, grain: f64) -> f64 {
    (v / grain - 1e-4).ceil() * grain
}

impl SizingRules {
    pub fn validate(&self) -> Result<(), RulesError> {
        self.validate_in("")
    }

    fn validate_in(&self, at: &str) -> Result<(), RulesError> {
        let err = |field: &str, problem: &str| Err(RulesError { field: format!("{at}{field}"), problem: problem.into() });
        let finite_pos = |v: f64| v.is_finite() && v >= 0.0;
        for (field, v) in [
            ("min_cpu_cores", self.min_cpu_cores),
            ("min_memory_mib", self.min_memory_mib),
            ("max_borrow_cpu_cores", self.max_borrow_cpu_cores),
            ("max_borrow_memory_mib", self.max_borrow_memory_mib),
            ("lend_cost", self.lend_cost),
        ] {
            if !finite_pos(v) {
                return err(field, &format!("must be a finite number >= 0, found {v}"));
            }
        }
        for (field, max, min) in
            [("max_cpu_cores", self.max_cpu_cores, self.min_cpu_cores), ("max_memory_mib", self.max_memory_mib, self.min_memory_mib)]
        {
            if let Some(m) = max {
                if !(m.is_finite() && m > 0.0) {
                    return err(field, &format!("must be a finite number > 0, found {m}"));
                }
                if m < min {
                    return err(field, &format!("{m} is below the minimum {min}"));
                }
            }
        }
        for (field, v) in [
            ("grow_at", self.grow_at),
            ("cpu_shrink_at", self.cpu_shrink_at),
            ("memory_shrink_at", self.memory_shrink_at),
            ("saturated_at", self.saturated_at),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                return err(field, &format!("must be within (0, 1], found {v}"));
            }
        }
        if !(self.margin.is_finite() && (1.0..=4.0).contains(&self.margin)) {
            return err("margin", &format!("must be within 1..=4, found {}", self.margin));
        }
        // A VM grows when p90 passes grow_at x its allocation and shrinks when p90 x margin
        // stays under shrink_at x it: without a band between the two it would do both in turn.
        for (field, v) in [("cpu_shrink_at", self.cpu_shrink_at), ("memory_shrink_at", self.memory_shrink_at)] {
            if v >= self.grow_at * self.margin {
                return err(
                    field,
                    &format!("{v} must be below grow_at x margin = {:.3} (a band where the allocation stays)", self.grow_at * self.margin),
                );
            }
        }
        for (field, v) in [("cpu_max_shrink_step", self.cpu_max_shrink_step), ("memory_max_shrink_step", self.memory_max_shrink_step)] {
            if !(v > 0.0 && v < 1.0) {
                return err(field, &format!("must be within (0, 1), found {v}"));
            }
        }
        if !(self.max_grow_factor.is_finite() && self.max_grow_factor > 1.0) {
            return err("max_grow_factor", &format!("must be a finite number > 1, found {}", self.max_grow_factor));
        }
        for (field, v) in [
            ("cpu_horizon_steps", self.cpu_horizon_steps),
            ("memory_horizon_steps", self.memory_horizon_steps),
            ("lease_horizon_steps", self.lease_horizon_steps),
        ] {
            if !(1..=crate::demand::MAX_HORIZON).contains(&v) {
                return err(field, &format!("must be within 1..={}, found {v}", crate::demand::MAX_HORIZON));
            }
        }
        for (field, v) in [("cpu_peak_lookback_s", self.cpu_peak_lookback_s), ("memory_peak_lookback_s", self.memory_peak_lookback_s)] {
            if !(300..=86_400).contains(&v) {
                return err(field, &format!("must be within 300..=86400 (one sample to a day), found {v}"));
            }
        }
        if self.cpu_shrink_after_cycles == 0 {
            return err("cpu_shrink_after_cycles", "must be at least 1");
        }
        if self.memory_shrink_after_cycles == 0 {
            return err("memory_shrink_after_cycles", "must be at least 1");
        }
        if self.max_lease_s == 0 || self.max_lease_s > 86_400 {
            return err("max_lease_s", &format!("must be within 1..=86400, found {}", self.max_lease_s));
        }
        Ok(())
    }
}

/// A group's or a VM's changes to the defaults: only the fields it names.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesOverride {
    pub auto_resize: Option<bool>,
    pub min_cpu_cores: Option<f64>,
    pub max_cpu_cores: Option<f64>,
    pub min_memory_mib: Option<f64>,
    pub max_memory_mib: Option<f64>,
    pub grow_at: Option<f64>,
    pub margin: Option<f64>,
    pub cpu_shrink_at: Option<f64>,
    pub cpu_shrink_after_cycles: Option<u32>,
    pub cpu_max_shrink_step: Option<f64>,
    pub memory_shrink_at: Option<f64>,
    pub memory_shrink_after_cycles: Option<u32>,
    pub memory_max_shrink_step: Option<f64>,
    pub max_grow_factor: Option<f64>,
    pub saturated_at: Option<f64>,
    pub floor_hold_s: Option<u64>,
    pub cpu_peak_lookback_s: Option<u64>,
    pub memory_peak_lookback_s: Option<u64>,
    pub cpu_horizon_steps: Option<usize>,
    pub memory_horizon_steps: Option<usize>,
    pub lease_horizon_steps: Option<usize>,
    pub may_lend: Option<bool>,
    pub lend_lookback_s: Option<u64>,
    pub may_borrow: Option<bool>,
    pub max_borrow_cpu_cores: Option<f64>,
    pub max_borrow_memory_mib: Option<f64>,
    pub max_lease_s: Option<u64>,
    pub priority: Option<i32>,
    pub lend_cost: Option<f64>,
}

impl RulesOverride {
    fn apply(&self, r: &mut SizingRules) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { r.$f = v; } )* };
        }
        set!(
            auto_resize,
            min_cpu_cores,
            min_memory_mib,
            grow_at,
            margin,
            cpu_shrink_at,
            cpu_shrink_after_cycles,
            cpu_max_shrink_step,
            memory_shrink_at,
            memory_shrink_after_cycles,
            memory_max_shrink_step,
            max_grow_factor,
            saturated_at,
            floor_hold_s,
            cpu_peak_lookback_s,
            memory_peak_lookback_s,
            cpu_horizon_steps,
            memory_horizon_steps,
            lease_horizon_steps,
            may_lend,
            lend_lookback_s,
            may_borrow,
            max_borrow_cpu_cores,
            max_borrow_memory_mib,
            max_lease_s,
            priority,
            lend_cost
        );
        if self.max_cpu_cores.is_some() {
            r.max_cpu_cores = self.max_cpu_cores;
        }
        if self.max_memory_mib.is_some() {
            r.max_memory_mib = self.max_memory_mib;
        }
    }
}

/// A group of VMs named by patterns (`web-*`, `db-1`: a trailing `*` matches any suffix).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRules {
    pub name: String,
    #[serde(rename = "match")]
    pub patterns: Vec<String>,
    #[serde(flatten)]
    pub rules: RulesOverride,
}

impl GroupRules {
    pub fn names(&self, vm: &str) -> bool {
        self.patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => vm.starts_with(prefix),
            None => p == vm,
        })
    }
}

/// The whole `[sizing]` section.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SizingPolicies {
    pub defaults: SizingRules,
    #[serde(rename = "group")]
    pub groups: Vec<GroupRules>,
    #[serde(rename = "vm")]
    pub vms: BTreeMap<String, RulesOverride>,
}

impl SizingPolicies {
    /// The rules for `vm`: the defaults, changed by the first group that names it, then by its
    /// own entry.
    pub fn rules_for(&self, vm: &str) -> SizingRules {
        let mut r = self.defaults.clone();
        if let Some(g) = self.groups.iter().find(|g| g.names(vm)) {
            g.rules.apply(&mut r);
        }
        if let Some(o) = self.vms.get(vm) {
            o.apply(&mut r);
        }
        r
    }

    /// The group that governs `vm`, if any.
    pub fn group_of(&self, vm: &str) -> Option<&str> {
        self.groups.iter().find(|g| g.names(vm)).map(|g| g.name.as_str())
    }

    /// Checks the defaults and every group and VM entry as it would apply (over the defaults).
    pub fn validate(&self) -> Result<(), RulesError> {
        self.defaults.validate_in("defaults.")?;
        for (i, g) in self.groups.iter().enumerate() {
            let at = format!("group[{i}]");
            if g.name.trim().is_empty() {
                return Err(RulesError { field: format!("{at}.name"), problem: "must not be empty".into() });
            }
            if g.patterns.is_empty() || g.patterns.iter().any(|p| p.trim().is_empty() || p[..p.len().saturating_sub(1)].contains('*')) {
                return Err(RulesError {
                    field: format!("{at}.match"),
                    problem: "needs at least one VM name or prefix* (a '*' only at the end)".into(),
                });
            }
            if self.groups[..i].iter().any(|o| o.name == g.name) {
                return Err(RulesError { field: format!("{at}.name"), problem: format!("{:?} is named twice", g.name) });
            }
            let mut r = self.defaults.clone();
            g.rules.apply(&mut r);
            r.validate_in(&format!("{at}."))?;
        }
        for (vm, o) in &self.vms {
            let mut r = self.rules_for(vm);
            o.apply(&mut r);
            r.validate_in(&format!("vm.{vm}."))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_vm_entries_change_only_what_they_name() {
        let p: SizingPolicies = toml::from_str(
            r#"
            [defaults]
            max_lease_s = 900
            [[group]]
            name = "databases"
            match = ["db-*"]
            priority = 100
            may_lend = false
            [[group]]
            name = "everything-d"
            match = ["d*"]
            priority = 5
            [vm."db-2"]
            max_borrow_cpu_cores = 8.0
            "#,
        )
        .unwrap();
        p.validate().unwrap();
        let web = p.rules_for("web-1");
        assert_eq!((web.priority, web.max_lease_s, web.may_lend), (0, 900, true));
        let db1 = p.rules_for("db-1");
        assert_eq!((db1.priority, db1.may_lend, db1.max_borrow_cpu_cores), (100, false, 4.0));
        assert_eq!(p.group_of("db-1"), Some("databases"), "the first group that names a VM governs it");
        let db2 = p.rules_for("db-2");
        assert_eq!((db2.priority, db2.max_borrow_cpu_cores, db2.max_lease_s), (100, 8.0, 900));
        assert_eq!(p.rules_for("dx").priority, 5);
    }

    #[test]
    fn bad_policies_name_the_field() {
        let e = toml::from_str::<SizingPolicies>("[defaults]\nmax_leese_s = 3\n").unwrap_err().to_string();
        assert!(e.contains("max_leese_s"), "{e}");
        let e = toml::from_str::<SizingPolicies>("[[group]]\nname='a'\nmatch=['x']\npriorty=1\n").unwrap_err().to_string();
        assert!(e.contains("priorty"), "{e}");
        for (text, field) in [
            ("[defaults]\ngrow_at = 1.5\n", "defaults.grow_at"),
            ("[defaults]\ngrow_at = 0.5\ncpu_shrink_at = 0.7\n", "defaults.cpu_shrink_at"),
            ("[defaults]\nmin_cpu_cores = -1.0\n", "defaults.min_cpu_cores"),
            ("[defaults]\nmax_lease_s = 0\n", "defaults.max_lease_s"),
            ("[[group]]\nname='a'\nmatch=[]\n", "group[0].match"),
            ("[[group]]\nname='a'\nmatch=['*x']\n", "group[0].match"),
            ("[[group]]\nname='a'\nmatch=['x']\n[[group]]\nname='a'\nmatch=['y']\n", "group[1].name"),
            ("[[group]]\nname='a'\nmatch=['x']\nmargin=9.0\n", "group[0].margin"),
            ("[vm.\"v1\"]\nmax_cpu_cores = 0.01\n", "vm.v1.max_cpu_cores"),
            ("[vm.\"v1\"]\nmemory_horizon_steps = 13\n", "vm.v1.memory_horizon_steps"),
        ] {
            let p: SizingPolicies = toml::from_str(text).unwrap();
            let e = p.validate().unwrap_err();
            assert_eq!(e.field, field, "{text}: {e}");
        }
    }
}
