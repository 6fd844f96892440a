//! The optimiser's local search: put the items set free back, better than where they were.
//!
//! Levine and Ducatelle's dominance search (after Martello and Toth's dominance criterion):
//! for each host, swap one or two of its items for one or two free items whose total is larger
//! and still fits — the host ends fuller, and what it gave up is smaller and easier to place —
//! until no swap improves a host; then the free items go back by first-fit decreasing, opening
//! a host only when none has room. Each swap is an incremental change of the solution
//! ([`Solution::move_item`]), never a recount.

use super::{NOWHERE, Rng, Solution, Tables};

/// The most sweeps over the hosts before the search settles for what it has.
const MAX_SWEEPS: usize = 8;

/// Places every item in `free` (unplaced in `s`): dominance swaps against the hosts in use,
/// then first-fit decreasing; leaves `free` empty (an item that fits nowhere stays unplaced).
pub fn reinsert(t: &Tables<'_>, s: &mut Solution, free: &mut Vec<u32>, rng: &mut Rng) {
    dominance_swaps(t, s, free, rng);
    first_fit_decreasing(t, s, free);
}

/// Swaps between hosts in use and `free` while a host gets fuller.
pub fn dominance_swaps(t: &Tables<'_>, s: &mut Solution, free: &mut Vec<u32>, rng: &mut Rng) {
    if free.is_empty() {
        return;
    }
    let mut hosts: Vec<u32> = (0..t.problem.hosts.len() as u32).filter(|h| !s.members(*h).is_empty()).collect();
    let mut index = FreeIndex::new(t, s, free);
    for _ in 0..MAX_SWEEPS {
        rng.shuffle(&mut hosts);
        let mut improved = false;
        for &h in &hosts {
            if free.is_empty() {
                return;
            }
            while improve_host(t, s, h, free, &index) {
                improved = true;
                index = FreeIndex::new(t, s, free);
            }
        }
        if !improved {
            break;
        }
    }
}

/// The free items, and pairs of them, sorted by scalar size: the best swap for a host is
/// found by binary search, not by trying every pair.
struct FreeIndex {
    singles: Vec<(f64, u32)>,
    pairs: Vec<(f64, u32, u32)>,
}

/// Pairs are indexed only up to this many free items (beyond, singles only).
const MAX_PAIRED: usize = 160;
/// Hosts of at most this many items also try swapping three of them out.
const MAX_TRIPLE_OUT: usize = 6;
/// How many candidates below the best a multi-dimensional check may reject before giving up.
const MAX_REJECTS: usize = 16;

impl FreeIndex {
    fn new(t: &Tables<'_>, s: &Solution, free: &[u32]) -> FreeIndex {
        let mut singles: Vec<(f64, u32)> = free.iter().map(|f| (t.scalar(*f, s.option_of[*f as usize]), *f)).collect();
        singles.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut pairs = Vec::new();
        if singles.len() <= MAX_PAIRED {
            for (x, a) in singles.iter().enumerate() {
                for b in &singles[x + 1..] {
                    pairs.push((a.0 + b.0, a.1, b.1));
                }
            }
            pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        }
        FreeIndex { singles, pairs }
    }
}

/// The largest entry of `sorted` (by its size, `size_of`) within (`above`, `limit`] that
/// `accept` takes.
fn best_within<T>(sorted: &[T], size_of: impl Fn(&T) -> f64, above: f64, limit: f64, accept: impl Fn(&T) -> bool) -> Option<&T> {
    let end = sorted.partition_point(|e| size_of(e) <= limit + 1e-12);
    sorted[..end].iter().rev().take_while(|e| size_of(e) > above + 1e-12).take(MAX_REJECTS).find(|e| accept(e))
}

/// The best swap for host `h` (largest gain in its scalar load), applied; whether there was one.
fn improve_host(t: &Tables<'_>, s: &mut Solution, h: u32, free: &mut Vec<u32>, index: &FreeIndex) -> bool {
    let dims = t.problem.dims;
    let members: Vec<u32> = s.members(h).to_vec();
    let cap = &t.problem.hosts[h as usize].capacity;
    let load: Vec<f64> = s.load(h, dims).to_vec();
    let demand = |i: u32| &t.problem.items[i as usize].options[s.option_of[i as usize] as usize].demand;
    // Whether the host holds `load - out + inn` within its capacity.
    let fits_after = |out: &[u32], inn: &[u32]| -> bool {
        (0..dims).all(|k| {
            let l = load[k] - out.iter().map(|i| demand(*i)[k]).sum::<f64>() + inn.iter().map(|i| demand(*i)[k]).sum::<f64>();
            super::within_capacity(l, cap[k])
        })
    };
    // The host's room as a scalar (its smallest room over the dimensions, in scale units).
    let room = (0..dims).map(|k| (cap[k] - load[k]) / t.scale[k]).fold(f64::INFINITY, f64::min).max(0.0);
    let size = |i: u32| t.scalar(i, s.option_of[i as usize]);
    let mut outs: Vec<Vec<u32>> = vec![Vec::new()];
    for (a, &ma) in members.iter().enumerate() {
        outs.push(vec![ma]);
        for (b, &mb) in members.iter().enumerate().skip(a + 1) {
            outs.push(vec![ma, mb]);
            // Three out (for hosts of few items: a whole small host's content swapped).
            if members.len() <= MAX_TRIPLE_OUT {
                for &mc in &members[b + 1..] {
                    outs.push(vec![ma, mb, mc]);
                }
            }
        }
    }
    let mut best: Option<(f64, Vec<u32>, Vec<u32>)> = None;
    for out in outs {
        let out_size: f64 = out.iter().map(|i| size(*i)).sum();
        // In scalar terms the host can take up to out_size + room (exact in one dimension;
        // in more, `fits_after` decides).
        let limit = out_size + if dims == 1 { room } else { room * dims as f64 };
        let floor = out_size + best.as_ref().map_or(0.0, |b| b.0);
        if let Some(&(sz, f)) = best_within(&index.singles, |e| e.0, floor, limit, |e| fits_after(&out, &[e.1])) {
            best = Some((sz - out_size, out.clone(), vec![f]));
        }
        let floor = out_size + best.as_ref().map_or(0.0, |b| b.0);
        if !out.is_empty()
            && let Some(&(sz, f, g)) = best_within(&index.pairs, |e| e.0, floor, limit, |e| fits_after(&out, &[e.1, e.2]))
        {
            best = Some((sz - out_size, out.clone(), vec![f, g]));
        }
    }
    let Some((_, out, inn)) = best else { return false };
    for i in &out {
        s.unplace(t, *i);
    }
    for (k, i) in inn.iter().enumerate() {
        if !s.fits(t, *i, s.option_of[*i as usize], h) {
            // Anti-affinity: undo.
            for j in &inn[..k] {
                s.unplace(t, *j);
            }
            for o in &out {
                s.place(t, *o, h);
            }
            return false;
        }
        s.place(t, *i, h);
    }
    free.retain(|f| !inn.contains(f));
    free.extend(out);
    true
}

/// Places the free items largest first, each on the first host in use with room, else on the
/// first unused host (cheapest per capacity first) with room; empties `free`.
pub fn first_fit_decreasing(t: &Tables<'_>, s: &mut Solution, free: &mut Vec<u32>) {
    free.sort_by(|a, b| t.scalar(*b, s.option_of[*b as usize]).total_cmp(&t.scalar(*a, s.option_of[*a as usize])).then(a.cmp(b)));
    for i in std::mem::take(free) {
        first_fit(t, s, i);
    }
}

/// Places unplaced item `i` on the first host in use with room, else on the first unused host
/// (cheapest per capacity first) with room; leaves it unplaced where none has.
pub fn first_fit(t: &Tables<'_>, s: &mut Solution, i: u32) {
    let o = s.option_of[i as usize];
    let used = (0..t.problem.hosts.len() as u32).find(|h| !s.members(*h).is_empty() && s.fits(t, i, o, *h));
    match used.or_else(|| t.open_order.iter().copied().find(|h| s.members(*h).is_empty() && s.fits(t, i, o, *h))) {
        Some(h) => s.place(t, i, h),
        None => debug_assert_eq!(s.host_of[i as usize], NOWHERE),
    }
}
