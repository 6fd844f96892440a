//! The most a VM used over the last hour and the last day, in bounded memory: the resize rule
//! never shrinks below the hour's peak, and a lender keeps its day's peak. Samples fold into
//! 5-minute buckets for the hour and hourly buckets for the day (36 buckets a VM, whatever the
//! sampling rate), so the coordinator can keep one per VM of a large cluster.

use std::collections::VecDeque;

use super::Allocation;

const FINE_MS: u64 = 300_000;
const COARSE_MS: u64 = 3_600_000;
const FINE_KEPT: u64 = 12;
const COARSE_KEPT: u64 = 24;

/// Peaks of one VM's use.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PeakWindow {
    /// (bucket start, peak) per 5 minutes, oldest first, the last hour.
    fine: VecDeque<(u64, Allocation)>,
    /// (bucket start, peak) per hour, oldest first, the last day.
    coarse: VecDeque<(u64, Allocation)>,
    /// The newest sample's time (older ones arriving late are ignored).
    last_ms: u64,
}

fn max(a: Allocation, b: Allocation) -> Allocation {
    Allocation::new(a.cpu_cores.max(b.cpu_cores), a.memory_mib.max(b.memory_mib))
}

fn fold(q: &mut VecDeque<(u64, Allocation)>, width: u64, kept: u64, at_ms: u64, used: Allocation) {
    let start = at_ms - at_ms % width;
    match q.back_mut() {
        Some((s, peak)) if *s == start => *peak = max(*peak, used),
        _ => q.push_back((start, used)),
    }
    while q.front().is_some_and(|(s, _)| *s + kept * width <= start) {
        q.pop_front();
    }
}

impl PeakWindow {
    /// Folds in what the VM used at `at_ms` (cores, MiB). Samples not newer than the last are
    /// ignored (a report seen twice counts once).
    pub fn observe(&mut self, at_ms: u64, used: Allocation) {
        if at_ms <= self.last_ms || !(used.cpu_cores.is_finite() && used.memory_mib.is_finite()) {
            return;
        }
        self.last_ms = at_ms;
        fold(&mut self.fine, FINE_MS, FINE_KEPT, at_ms, used);
        fold(&mut self.coarse, COARSE_MS, COARSE_KEPT, at_ms, used);
    }

    /// The most used in the `seconds` before `now_ms` (to the bucket: up to 5 minutes more for
    /// an hour or less, up to an hour more beyond).
    pub fn peak(&self, now_ms: u64, seconds: u64) -> Allocation {
        let since = now_ms.saturating_sub(seconds.saturating_mul(1000));
        let (q, width) = if seconds * 1000 <= FINE_MS * FINE_KEPT { (&self.fine, FINE_MS) } else { (&self.coarse, COARSE_MS) };
        q.iter().filter(|(s, _)| s + width > since).fold(Allocation::default(), |m, (_, p)| max(m, *p))
    }

    /// When the newest sample was taken (0: none yet).
    pub fn last_ms(&self) -> u64 {
        self.last_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_and_a_day_of_peaks_in_bounded_buckets() {
        let mut w = PeakWindow::default();
        let t0 = 1_000 * COARSE_MS;
        // A burst of 6 cores at t0, then 0.5 cores every 10 s for 25 hours.
        w.observe(t0, Allocation::new(6.0, 2000.0));
        for i in 1..=(25 * 360) {
            w.observe(t0 + i * 10_000, Allocation::new(0.5, 1000.0));
        }
        let now = t0 + 25 * COARSE_MS;
        assert_eq!(w.peak(now, 3600), Allocation::new(0.5, 1000.0));
        // 25 hours on, the burst has left the day too.
        assert_eq!(w.peak(now, 86_400).cpu_cores, 0.5);
        assert!(w.fine.len() as u64 <= FINE_KEPT && w.coarse.len() as u64 <= COARSE_KEPT, "{} {}", w.fine.len(), w.coarse.len());
        // A burst 30 minutes ago is within the hour and the day, and gone from a 10-minute look.
        w.observe(now - 1, Allocation::new(0.5, 1000.0));
        let mut w2 = w.clone();
        w2.observe(now + 1, Allocation::new(3.0, 1500.0));
        let later = now + 30 * 60_000;
        w2.observe(later, Allocation::new(0.2, 900.0));
        assert_eq!(w2.peak(later, 3600).cpu_cores, 3.0);
        assert_eq!(w2.peak(later, 86_400).cpu_cores, 3.0);
        assert_eq!(w2.peak(later, 600).cpu_cores, 0.2);
        // Late or repeated samples do not count again; nonsense is ignored.
        w2.observe(later, Allocation::new(9.0, 9000.0));
        w2.observe(later + 1, Allocation::new(f64::NAN, 1.0));
        assert_eq!(w2.peak(later, 3600).cpu_cores, 3.0);
    }
}
