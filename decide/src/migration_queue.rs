//! The admission rule for concurrent live migrations: at most `per_host_out` moves leaving and
//! `per_host_in` moves arriving at any host, and `cluster` moves in flight in all. Moves wait in
//! plan order; whenever one finishes, every waiting move whose hosts have a free slot starts at
//! once (no batches: a slow move holds back only moves that share its hosts).
//!
//! Pure: the caller says when moves start and finish.

use std::collections::{HashMap, VecDeque};

/// Concurrency limits (the coordinator's `[executor]` section).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MigrationLimits {
    pub per_host_out: usize,
    pub per_host_in: usize,
    pub cluster: usize,
    /// A move's time budget: this floor plus its memory at `assumed_mb_per_s`; past it the move
    /// is aborted and the VM stays on its source.
    pub timeout_floor_ms: u64,
    pub assumed_mb_per_s: u64,
    /// What a plan does when one of its moves fails: `continue` with the others, or stop and
    /// `rollback` its done moves (last first).
    pub on_failure: OnFailure,
    /// A move whose VM runs on its source again stays open while its destination may still hold
    /// an incoming instance and cannot be asked; once the destination has been silent this long
    /// the move ends without its word (an incoming migration cannot finish without its source,
    /// so what is left there is an orphan its hypervisor tears down).
    pub silent_destination_ms: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    #[default]
    Continue,
    Rollback,
}

impl Default for MigrationLimits {
    fn default() -> Self {
        MigrationLimits {
            per_host_out: 2,
            per_host_in: 2,
            cluster: 8,
            timeout_floor_ms: 60_000,
            assumed_mb_per_s: 100,
            on_failure: OnFailure::Continue,
            silent_destination_ms: 600_000,
        }
    }
}

impl MigrationLimits {
    pub fn validate(&self) -> Result<(), String> {
        if self.per_host_out == 0 || self.per_host_in == 0 || self.cluster == 0 {
            return Err("every limit must be at least 1".into());
        }
        if self.timeout_floor_ms == 0 || self.assumed_mb_per_s == 0 || self.silent_destination_ms == 0 {
            return Err("timeout_floor_ms, assumed_mb_per_s and silent_destination_ms must be at least 1".into());
        }
        Ok(())
    }
}

/// A move waiting or running, identified by the caller's `id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedMove {
    pub id: u64,
    pub from: String,
    pub to: String,
}

/// Waiting moves and the slots the running ones hold.
#[derive(Debug, Default)]
pub struct MigrationQueue {
    limits: MigrationLimits,
    waiting: VecDeque<QueuedMove>,
    running: HashMap<u64, QueuedMove>,
    out: HashMap<String, usize>,
    inc: HashMap<String, usize>,
}

impl MigrationQueue {
    pub fn new(limits: MigrationLimits) -> MigrationQueue {
        MigrationQueue { limits, ..Default::default() }
    }

    pub fn push(&mut self, m: QueuedMove) {
        self.waiting.push_back(m);
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    fn fits(&self, m: &QueuedMove) -> bool {
        self.running.len() < self.limits.cluster
            && self.out.get(&m.from).copied().unwrap_or(0) < self.limits.per_host_out
            && self.inc.get(&m.to).copied().unwrap_or(0) < self.limits.per_host_in
    }

    /// Every waiting move that may start now, in plan order; they count as running from here.
    pub fn start_ready(&mut self) -> Vec<QueuedMove> {
        let mut started = Vec::new();
        let mut i = 0;
        while i < self.waiting.len() && self.running.len() < self.limits.cluster {
            if self.fits(&self.waiting[i]) {
                let m = self.waiting.remove(i).expect("index in range");
                *self.out.entry(m.from.clone()).or_default() += 1;
                *self.inc.entry(m.to.clone()).or_default() += 1;
                self.running.insert(m.id, m.clone());
                started.push(m);
            } else {
                i += 1;
            }
        }
        started
    }

    /// Move `id` ended (whatever its outcome): its slots free up.
    pub fn finish(&mut self, id: u64) {
        if let Some(m) = self.running.remove(&id) {
            for (map, host) in [(&mut self.out, &m.from), (&mut self.inc, &m.to)] {
                if let Some(n) = map.get_mut(host) {
                    *n -= 1;
                    if *n == 0 {
                        map.remove(host);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mv(id: u64, from: &str, to: &str) -> QueuedMove {
        QueuedMove { id, from: from.into(), to: to.into() }
    }

    /// Drives the queue through time: each move takes `duration(id)` ticks. Checks the limits at
    /// every tick and returns each move's start tick.
    fn drive(q: &mut MigrationQueue, limits: MigrationLimits, duration: impl Fn(u64) -> u64) -> HashMap<u64, u64> {
        let mut started_at = HashMap::new();
        let mut ends: Vec<(u64, u64)> = Vec::new();
        let mut t = 0;
        while !q.is_idle() {
            for m in q.start_ready() {
                started_at.insert(m.id, t);
                ends.push((t + duration(m.id), m.id));
            }
            // The limits hold while these run.
            assert!(q.running() <= limits.cluster);
            let mut out: HashMap<&str, usize> = HashMap::new();
            let mut inc: HashMap<&str, usize> = HashMap::new();
            for m in q.running.values() {
                *out.entry(&m.from).or_default() += 1;
                *inc.entry(&m.to).or_default() += 1;
            }
            assert!(out.values().all(|n| *n <= limits.per_host_out), "{out:?}");
            assert!(inc.values().all(|n| *n <= limits.per_host_in), "{inc:?}");
            t += 1;
            for (_, id) in ends.iter().filter(|(end, _)| *end == t) {
                q.finish(*id);
            }
            assert!(t < 10_000, "the queue never drained");
        }
        started_at
    }

    #[test]
    fn fifty_moves_never_exceed_the_limits_per_host_or_overall() {
        let limits = MigrationLimits::default();
        let mut q = MigrationQueue::new(limits);
        // 50 moves among 10 hosts, many sharing sources and destinations.
        for i in 0..50u64 {
            q.push(mv(i, &format!("h{}", i % 10), &format!("h{}", (i * 3 + 1) % 10)));
        }
        let started = drive(&mut q, limits, |id| 1 + id % 4);
        assert_eq!(started.len(), 50, "every move ran");
        // Some moves had to wait: the cluster limit of 8 bound at the start.
        assert_eq!(started.values().filter(|t| **t == 0).count(), 8);
    }

    #[test]
    fn a_slow_move_holds_back_only_the_moves_that_share_its_hosts() {
        let limits = MigrationLimits { per_host_out: 1, per_host_in: 1, cluster: 8, ..Default::default() };
        let mut q = MigrationQueue::new(limits);
        q.push(mv(0, "a", "b")); // slow
        q.push(mv(1, "a", "c")); // shares source a: waits for 0
        q.push(mv(2, "d", "e")); // independent
        q.push(mv(3, "d", "f")); // waits for 2 only
        let started = drive(&mut q, limits, |id| if id == 0 { 100 } else { 2 });
        assert_eq!(started[&0], 0);
        assert_eq!(started[&2], 0);
        assert_eq!(started[&3], 2, "starts as soon as move 2 frees d, not when the slow one ends");
        assert_eq!(started[&1], 100, "waits for the slow move that holds a");
    }

    #[test]
    fn zero_limits_are_refused() {
        assert!(MigrationLimits { cluster: 0, ..Default::default() }.validate().is_err());
        assert!(MigrationLimits::default().validate().is_ok());
    }
}
