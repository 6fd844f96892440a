//! Proactive resizing: what a VM's allocation should be before its forecast peak, and the
//! safeguards around it.
//!
//! - Grow when the upper quantile (p90) over the horizon exceeds `grow_at` of the allocation,
//!   to that quantile times `margin`, at most `max_grow_factor` times the allocation per cycle.
//! - Shrink only with confidence and slowly: the quantile times the margin has stayed under
//!   `*_shrink_at` of the allocation for `*_shrink_after_cycles` cycles in a row, and then by at
//!   most `*_max_shrink_step` of the allocation per cycle (memory slower than CPU).
//! - Never below the policy's floor, the forecast's upper quantile times the margin, the most
//!   it used in the last hour, a floor
//!   raised by saturation or an OOM (held `floor_hold_s`), nor (memory) the VM's resident set;
//!   never above the policy's ceiling or the domain's maximum.
//! - Without a forecast nothing shrinks; a saturated VM still grows (by the margin a cycle).
//!
//! Pure: the caller keeps each VM's [`SizingMemory`] across cycles and passes the time.

use serde::{Deserialize, Serialize};

use super::Allocation;
use super::rules::{CPU_GRAIN, MEMORY_GRAIN_MIB, SizingRules, ceil_to};
use crate::demand::Forecast;

/// One VM as the resize rule sees it in one cycle.
#[derive(Clone, Debug)]
pub struct ResizeInput<'a> {
    pub vm_id: &'a str,
    pub rules: &'a SizingRules,
    /// The domain's maximum: vCPUs (as cores) and maximum memory.
    pub limits: Allocation,
    /// Its own allocation now (leases not counted).
    pub allocated: Allocation,
    /// What it may use now: its allocation plus what it borrows, less what it lends.
    pub effective: Allocation,
    /// CPU demand forecast, fractions of `limits.cpu_cores`.
    pub cpu_forecast: Option<&'a Forecast>,
    /// Memory demand forecast, fractions of `limits.memory_mib`.
    pub memory_forecast: Option<&'a Forecast>,
    /// What it used in the last cycle (cores, MiB of the guest's memory in use).
    pub used: Allocation,
    /// The most it used in any cycle of the last `cpu_peak_lookback_s` (CPU) and
    /// `memory_peak_lookback_s` (memory): the allocation does not go below it.
    pub recent_peak: Allocation,
    /// Its resident set on the host, MiB (a memory limit never goes below it).
    pub resident_mib: f64,
    /// The guest ran out of memory since the last cycle.
    pub oom: bool,
}

/// What the rule keeps per VM between cycles.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SizingMemory {
    pub cpu_shrink_votes: u32,
    pub memory_shrink_votes: u32,
    /// A floor raised by saturation or an OOM, and until when it holds (Unix ms).
    pub raised_floor: Allocation,
    pub floor_until_ms: u64,
}

/// A change the rule asks for, with its reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResizeDecision {
    pub vm_id: String,
    pub from: Allocation,
    pub to: Allocation,
    pub reason: String,
}

impl ResizeDecision {
    pub fn grows(&self) -> bool {
        self.to.cpu_cores > self.from.cpu_cores || self.to.memory_mib > self.from.memory_mib
    }
}

/// The largest p90 over the first `steps` horizons.
pub fn upper_quantile(f: &Forecast, steps: usize) -> f64 {
    f.q.iter().take(steps.max(1)).map(|q| q[2] as f64).fold(0.0, f64::max)
}

/// One resource's part of the rule.
struct Dimension<'a> {
    name: &'static str,
    unit: &'static str,
    grain: f64,
    allocated: f64,
    effective: f64,
    limit: f64,
    floor: f64,
    ceiling: f64,
    upper: Option<f64>,
    used: f64,
    peak: f64,
    votes: &'a mut u32,
    shrink_at: f64,
    shrink_after_cycles: u32,
    max_shrink_step: f64,
}

impl Dimension<'_> {
    fn decide(self, r: &SizingRules, reasons: &mut Vec<String>) -> f64 {
        let Dimension {
            name,
            unit,
            grain,
            allocated,
            effective,
            limit,
            floor,
            ceiling,
            upper,
            used,
            peak,
            votes,
            shrink_at,
            shrink_after_cycles,
            max_shrink_step,
        } = self;
        let ceiling = ceiling.min(limit).max(floor);
        let clamp = |v: f64| ceil_to(v, grain).clamp(floor, ceiling);
        let saturated = effective > 0.0 && used >= r.saturated_at * effective;
        let want = upper.map(|u| (u * r.margin).max(peak));
        // Below the floor (policy, raised floor): back up at once.
        if allocated + 1e-9 < floor {
            *votes = 0;
            reasons.push(format!("{name} {allocated:.2} {unit} below its floor {floor:.2}"));
            return clamp(floor);
        }
        // Growth: the forecast's (at most `max_grow_factor` a cycle), what it just used (evidence,
        // not capped: a VM seen using more than it is given gets at least that with the margin),
        // and saturation (the margin a cycle). The largest wins.
        let mut grow_to: Option<(f64, String)> = None;
        let mut consider = |target: f64, why: String| {
            if grow_to.as_ref().is_none_or(|(g, _)| target > *g) {
                grow_to = Some((target, why));
            }
        };
        if let (Some(w), Some(u)) = (want, upper)
            && u > r.grow_at * allocated
        {
            consider(
                w.min(allocated * r.max_grow_factor),
                format!("{name} p90 {u:.2} {unit} within the horizon > {:.0} % of {allocated:.2}", r.grow_at * 100.0),
            );
        }
        if used > r.grow_at * effective.max(allocated) {
            consider(
                used * r.margin,
                format!("{name} used {used:.2} {unit} > {:.0} % of the {:.2} it may use", r.grow_at * 100.0, effective),
            );
        }
        if saturated {
            consider(allocated * r.margin + grain, format!("{name} saturated: used {used:.2} of {effective:.2} {unit}"));
        }
        if let Some((target, why)) = grow_to {
            *votes = 0;
            let to = clamp(target.max(allocated + grain));
            if to > allocated + grain / 2.0 {
                reasons.push(why);
                return to;
            }
            return allocated;
        }
        let Some(w) = want else {
            *votes = 0;
            return allocated;
        };
        if w < shrink_at * allocated {
            *votes += 1;
            if *votes >= shrink_after_cycles {
                let to = clamp(w.max(allocated * (1.0 - max_shrink_step)));
                if to < allocated - grain / 2.0 {
                    reasons.push(format!(
                        "{name} p90 x margin {w:.2} {unit} < {:.0} % of {allocated:.2} for {} cycles",
                        shrink_at * 100.0,
                        *votes
                    ));
                    return to;
                }
            }
        } else {
            *votes = 0;
        }
        allocated
    }
}

/// The rule for one VM and cycle: `None` when its allocation should stay.
pub fn recommend(input: &ResizeInput<'_>, memory: &mut SizingMemory, now_ms: u64) -> Option<ResizeDecision> {
    let r = input.rules;
    if !r.auto_resize {
        return None;
    }
    if now_ms >= memory.floor_until_ms {
        memory.raised_floor = Allocation::default();
    }
    // Saturation or an OOM raise the floor for `floor_hold_s`.
    let hold_until = now_ms.saturating_add(r.floor_hold_s.saturating_mul(1000));
    if input.effective.cpu_cores > 0.0 && input.used.cpu_cores >= r.saturated_at * input.effective.cpu_cores {
        memory.raised_floor.cpu_cores = memory.raised_floor.cpu_cores.max(input.effective.cpu_cores);
        memory.floor_until_ms = hold_until;
    }
    if input.oom {
        memory.raised_floor.memory_mib = memory.raised_floor.memory_mib.max(input.allocated.memory_mib * 1.25);
        memory.floor_until_ms = hold_until;
    }
    let limits = input.limits;
    let cpu_upper = input.cpu_forecast.map(|f| upper_quantile(f, r.cpu_horizon_steps) * limits.cpu_cores);
    let mem_upper = input.memory_forecast.map(|f| upper_quantile(f, r.memory_horizon_steps) * limits.memory_mib);
    let mut reasons = Vec::new();
    let cpu = Dimension {
        name: "cpu",
        unit: "cores",
        grain: CPU_GRAIN,
        allocated: input.allocated.cpu_cores,
        effective: input.effective.cpu_cores,
        limit: limits.cpu_cores,
        floor: r.min_cpu_cores.max(memory.raised_floor.cpu_cores).min(limits.cpu_cores),
        ceiling: r.max_cpu_cores.unwrap_or(f64::INFINITY),
        upper: cpu_upper,
        used: input.used.cpu_cores,
        peak: input.recent_peak.cpu_cores,
        votes: &mut memory.cpu_shrink_votes,
        shrink_at: r.cpu_shrink_at,
        shrink_after_cycles: r.cpu_shrink_after_cycles,
        max_shrink_step: r.cpu_max_shrink_step,
    }
    .decide(r, &mut reasons);
    let memory_mib = Dimension {
        name: "memory",
        unit: "MiB",
        grain: MEMORY_GRAIN_MIB,
        allocated: input.allocated.memory_mib,
        effective: input.effective.memory_mib,
        limit: limits.memory_mib,
        floor: r.min_memory_mib.max(memory.raised_floor.memory_mib).max(input.resident_mib).min(limits.memory_mib),
        ceiling: r.max_memory_mib.unwrap_or(f64::INFINITY),
        upper: mem_upper,
        used: input.used.memory_mib,
        peak: input.recent_peak.memory_mib,
        votes: &mut memory.memory_shrink_votes,
        shrink_at: r.memory_shrink_at,
        shrink_after_cycles: r.memory_shrink_after_cycles,
        max_shrink_step: r.memory_max_shrink_step,
    }
    .decide(r, &mut reasons);
    let to = Allocation { cpu_cores: cpu, memory_mib };
    if reasons.is_empty() || to == input.allocated {
        return None;
    }
    Some(ResizeDecision { vm_id: input.vm_id.to_string(), from: input.allocated, to, reason: reasons.join("; ") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(rules: &'a SizingRules, alloc: f64, cpu: Option<&'a Forecast>, used: f64) -> ResizeInput<'a> {
        let a = Allocation { cpu_cores: alloc, memory_mib: 4096.0 };
        ResizeInput {
            vm_id: "vm-1",
            rules,
            limits: Allocation { cpu_cores: 8.0, memory_mib: 8192.0 },
            allocated: a,
            effective: a,
            cpu_forecast: cpu,
            memory_forecast: None,
            used: Allocation { cpu_cores: used, memory_mib: 1000.0 },
            recent_peak: Allocation { cpu_cores: used, memory_mib: 1000.0 },
            resident_mib: 1000.0,
            oom: false,
        }
    }

    #[test]
    fn grows_before_the_forecast_peak_and_never_past_the_domain() {
        let r = SizingRules { cpu_horizon_steps: 12, ..SizingRules::default() };
        // p90 3.2 cores (0.4 x 8) within the hour, allocation 2 cores: grow to 3.2 x 1.25 = 4.
        let mut f = Forecast::flat([0.05, 0.1, 0.15]);
        f.q[9] = [0.1, 0.3, 0.4];
        let mut m = SizingMemory::default();
        let d = recommend(&input(&r, 2.0, Some(&f), 0.5), &mut m, 0).unwrap();
        assert!((d.to.cpu_cores - 4.0).abs() < 1e-9, "{d:?}");
        assert!(d.grows() && d.reason.contains("p90"), "{}", d.reason);
        // Beyond the horizon it does not look: a peak at step 10 with a 6-step horizon is unseen.
        let r6 = SizingRules { cpu_horizon_steps: 6, ..SizingRules::default() };
        assert_eq!(recommend(&input(&r6, 2.0, Some(&f), 0.5), &mut SizingMemory::default(), 0), None);
        // The domain's 8 vCPUs bind.
        let big = Forecast::flat([0.9, 0.95, 1.0]);
        let d = recommend(&input(&r, 4.0, Some(&big), 0.5), &mut SizingMemory::default(), 0).unwrap();
        assert_eq!(d.to.cpu_cores, 8.0);
        // So does the policy's ceiling.
        let capped = SizingRules { max_cpu_cores: Some(6.0), ..SizingRules::default() };
        assert_eq!(recommend(&input(&capped, 4.0, Some(&big), 0.5), &mut SizingMemory::default(), 0).unwrap().to.cpu_cores, 6.0);
    }

    #[test]
    fn shrinks_only_after_cycles_of_confidence_and_by_steps() {
        let r = SizingRules::default();
        let low = Forecast::flat([0.01, 0.02, 0.05]); // p90 0.4 cores; x 1.25 = 0.5
        let mut m = SizingMemory::default();
        for cycle in 1..r.cpu_shrink_after_cycles {
            assert_eq!(recommend(&input(&r, 4.0, Some(&low), 0.2), &mut m, 0), None, "cycle {cycle}");
        }
        let d = recommend(&input(&r, 4.0, Some(&low), 0.2), &mut m, 0).unwrap();
        assert_eq!(d.to.cpu_cores, 4.0 * (1.0 - r.cpu_max_shrink_step), "at most cpu_max_shrink_step per cycle");
        // One cycle of a higher forecast (p90 x margin 4 cores, above cpu_shrink_at x 4) resets the
        // count.
        let mut m = SizingMemory::default();
        let mid = Forecast::flat([0.2, 0.3, 0.4]);
        for _ in 0..r.cpu_shrink_after_cycles - 1 {
            recommend(&input(&r, 4.0, Some(&low), 0.2), &mut m, 0);
        }
        assert_eq!(recommend(&input(&r, 4.0, Some(&mid), 0.2), &mut m, 0), None);
        assert_eq!(recommend(&input(&r, 4.0, Some(&low), 0.2), &mut m, 0), None);
        // Without a forecast nothing shrinks.
        let mut m = SizingMemory::default();
        for _ in 0..20 {
            assert_eq!(recommend(&input(&r, 4.0, None, 0.2), &mut m, 0), None);
        }
    }

    #[test]
    fn a_vm_seen_using_more_than_it_is_given_gets_that_with_the_margin_at_once() {
        let r = SizingRules::default();
        // Given 0.1 cores, it used 3 (a replay shows demand above the quota; a real guest's use
        // stops at the quota and saturates instead). The forecast has not caught up.
        let low = Forecast::flat([0.0, 0.005, 0.01]);
        let mut i = input(&r, 0.1, Some(&low), 3.0);
        i.effective.cpu_cores = 0.1;
        let d = recommend(&i, &mut SizingMemory::default(), 0).unwrap();
        // 3 x 1.25, although max_grow_factor (4) would cap a forecast's growth at 0.4.
        assert!((d.to.cpu_cores - 3.75).abs() < 1e-9, "{d:?}");
        assert!(d.reason.contains("used 3.00"), "{}", d.reason);
    }

    #[test]
    fn saturation_grows_and_raises_the_floor_for_its_hold() {
        let r = SizingRules::default();
        let low = Forecast::flat([0.01, 0.02, 0.05]);
        let mut m = SizingMemory::default();
        // Used 1.98 of 2 cores: grows even though the forecast is low.
        let d = recommend(&input(&r, 2.0, Some(&low), 1.98), &mut m, 0).unwrap();
        assert!(d.to.cpu_cores > 2.0 && d.reason.contains("saturated"), "{d:?}");
        // Within the hold it never shrinks below the saturated level.
        for t in 1..30 {
            if let Some(d) = recommend(&input(&r, 2.0, Some(&low), 0.1), &mut m, t * 60_000) {
                assert!(d.to.cpu_cores >= 2.0, "{d:?}");
            }
        }
        // After the hold it may.
        let mut shrank = false;
        for t in 0..10 {
            shrank |= recommend(&input(&r, 2.0, Some(&low), 0.1), &mut m, 3_600_000 + t).is_some_and(|d| d.to.cpu_cores < 2.0);
        }
        assert!(shrank);
    }

    #[test]
    fn memory_never_below_the_resident_set_and_an_oom_raises_it() {
        let r = SizingRules::default();
        let mut i = input(&r, 2.0, None, 0.1);
        let low = Forecast::flat([0.01, 0.02, 0.03]); // p90 245 MiB
        i.memory_forecast = Some(&low);
        i.cpu_forecast = Some(&low);
        i.resident_mib = 3000.0;
        let mut m = SizingMemory::default();
        let mut last = 4096.0;
        for t in 0..40 {
            let mut j = i.clone();
            j.allocated.memory_mib = last;
            j.effective.memory_mib = last;
            if let Some(d) = recommend(&j, &mut m, t) {
                last = d.to.memory_mib;
            }
        }
        assert!((3000.0..3100.0).contains(&last), "stops at the resident set: {last}");
        let mut j = i.clone();
        j.oom = true;
        let d = recommend(&j, &mut SizingMemory::default(), 0).unwrap();
        assert!(d.to.memory_mib >= 4096.0 * 1.25, "{d:?}");
    }
}
