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
/// then first-fit decreasing, then each item at the cheapest size its host has room for; leaves `free` empty (an item that fits nowhere stays unplaced).
pub fn reinsert(t: &Tables<'_>, s: &mut Solution, free: &mut Vec<u32>, rng: &mut Rng) {
    dominance_swaps(t, s, free, rng);
    first_fit_decreasing(t, s, free);
    settle_options(t, s);
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

/// Places the free items largest first, each on the host in use it leaves fullest (least room,
/// as a share of the largest capacities), else on the first unused host with room; items at
/// the size option they have. Empties `free`.
pub fn best_fit_decreasing(t: &Tables<'_>, s: &mut Solution, free: &mut Vec<u32>) {
    free.sort_by(|a, b| t.scalar(*b, s.option_of[*b as usize]).total_cmp(&t.scalar(*a, s.option_of[*a as usize])).then(a.cmp(b)));
    let dims = t.problem.dims;
    for i in std::mem::take(free) {
        let o = s.option_of[i as usize];
        let room_after = |h: u32| -> f64 {
            let cap = &t.problem.hosts[h as usize].capacity;
            let load = s.load(h, dims);
            (0..dims).map(|k| (cap[k] - load[k] - t.demand(i, o)[k]) / t.scale[k]).sum()
        };
        let used = (0..t.problem.hosts.len() as u32)
            .filter(|h| !s.members(*h).is_empty() && s.fits(t, i, o, *h))
            .min_by(|a, b| room_after(*a).total_cmp(&room_after(*b)).then(a.cmp(b)));
        match used.or_else(|| t.open_order.iter().copied().find(|h| s.members(*h).is_empty() && s.fits(t, i, o, *h))) {
            Some(h) => s.place(t, i, h),
            None => debug_assert_eq!(s.host_of[i as usize], NOWHERE),
        }
    }
}

/// Places unplaced item `i` where it costs least. An item of one option goes to its current
/// host if it fits there, else to the first host in use with room, else to the first unused
/// host (cheapest per capacity first) with room. Where sizes are searched too, every host in
/// use is tried with its members' sizes chosen anew ([`sizes_to_fit`]: smaller sizes where
/// they cost least, to make room) against opening a host, and the cheapest wins. Leaves the
/// item unplaced where none has room.
pub fn first_fit(t: &Tables<'_>, s: &mut Solution, i: u32) {
    if t.sized {
        return best_fit_sized(t, s, i);
    }
    let item = &t.problem.items[i as usize];
    let o = s.option_of[i as usize];
    let current = item.current.map(|(h, _)| h).filter(|h| s.fits(t, i, o, *h));
    let used = || (0..t.problem.hosts.len() as u32).find(|h| !s.members(*h).is_empty() && s.fits(t, i, o, *h));
    let unused = || t.open_order.iter().copied().find(|h| s.members(*h).is_empty() && s.fits(t, i, o, *h));
    match current.or_else(used).or_else(unused) {
        Some(h) => s.place(t, i, h),
        None => debug_assert_eq!(s.host_of[i as usize], NOWHERE),
    }
}

/// Items and their size options on one host.
type Sizes = Vec<(u32, u16)>;

/// [`first_fit`] where items have several sizes.
fn best_fit_sized(t: &Tables<'_>, s: &mut Solution, i: u32) {
    let item = &t.problem.items[i as usize];
    let current = item.current.map(|(h, _)| h);
    let move_cost = |h: u32| if current.is_some_and(|c| c != h) { item.move_cost } else { 0.0 };
    // (cost added, host, sizes of its members and the item)
    let mut best: Option<(f64, u32, Sizes)> = None;
    for h in 0..t.problem.hosts.len() as u32 {
        if s.members(h).is_empty() {
            continue;
        }
        let before: f64 = s.members(h).iter().map(|m| t.option_cost(*m, s.option_of[*m as usize])).sum();
        if let Some((after, sizes)) = sizes_to_fit(t, s, h, i) {
            let added = after - before + move_cost(h) + t.pairs_cost(s, i, h);
            if best.as_ref().is_none_or(|b| added < b.0) {
                best = Some((added, h, sizes));
            }
        }
    }
    // Opening a host: the current one if it is unused, else the first unused with room (the
    // item at its cheapest size that fits an empty host).
    let unused = current
        .into_iter()
        .chain(t.open_order.iter().copied())
        .filter(|h| s.members(*h).is_empty())
        .find_map(|h| t.options_by_cost(i).iter().find(|o| s.fits(t, i, **o, h)).map(|o| (h, *o)));
    if let Some((h, o)) = unused {
        // Opening a host is judged by the item's share of it (the rest of the host is room
        // for items still to come): a greedy charged the whole host would shrink every item
        // already placed rather than open one.
        let host = &t.problem.hosts[h as usize];
        let share = t.demand(i, o).iter().zip(&host.capacity).map(|(d, c)| d / c.max(1e-12)).fold(0.0, f64::max).min(1.0);
        let added = host.active_cost * share + t.option_cost(i, o) + move_cost(h) + t.pairs_cost(s, i, h);
        if best.as_ref().is_none_or(|b| added < b.0) {
            best = Some((added, h, vec![(i, o)]));
        }
    }
    let Some((_, h, sizes)) = best else { return };
    for &(m, o) in &sizes {
        if m != i && s.option_of[m as usize] != o {
            s.unplace(t, m);
            s.set_option(m, o);
        }
    }
    for &(m, o) in &sizes {
        if s.host_of[m as usize] == NOWHERE {
            s.set_option(m, o);
            s.place(t, m, h);
        }
    }
}

/// The sizes of host `h`'s members and of unplaced item `extra` that let them all fit on `h`
/// at the least cost (greedy: the members at the sizes they have, `extra` at its cheapest,
/// then, while a dimension is over, the change of one item to a smaller size that costs least
/// per unit of room it makes), with that cost; `None` if they do not fit even at their
/// smallest sizes, or `extra` may not join them (anti-affinity).
pub fn sizes_to_fit(t: &Tables<'_>, s: &Solution, h: u32, extra: u32) -> Option<(f64, Vec<(u32, u16)>)> {
    if s.members(h).iter().any(|m| t.share_group(*m, extra)) {
        return None;
    }
    let members = s.members(h).iter().map(|m| (*m, s.option_of[*m as usize]));
    fit_sizes(t, h, members.chain(std::iter::once((extra, t.options_by_cost(extra)[0]))))
}

/// The least-cost sizes of `items` together on host `h`, each from its cheapest size (so
/// that items a change leaves room for grow back), and their cost; `None` if they do not fit
/// at their smallest sizes.
pub fn cheapest_sizes(t: &Tables<'_>, h: u32, items: impl Iterator<Item = u32>) -> Option<(f64, Vec<(u32, u16)>)> {
    fit_sizes(t, h, items.map(|m| (m, t.options_by_cost(m)[0])))
}

/// From the sizes given, shrinks (greedy, cheapest room first) until `items` fit on `h`.
fn fit_sizes(t: &Tables<'_>, h: u32, items: impl Iterator<Item = (u32, u16)>) -> Option<(f64, Vec<(u32, u16)>)> {
    let p = t.problem;
    let dims = p.dims;
    let cap = &p.hosts[h as usize].capacity;
    let mut sizes: Vec<(u32, u16)> = items.collect();
    let mut load = vec![0.0; dims];
    for (m, o) in &sizes {
        for (k, d) in t.demand(*m, *o).iter().enumerate() {
            load[k] += d;
        }
    }
    loop {
        let over: Vec<f64> = (0..dims).map(|k| (load[k] - cap[k]).max(0.0)).collect();
        if (0..dims).all(|k| super::within_capacity(load[k], cap[k])) {
            break;
        }
        // The cheapest room: (cost per room, index in sizes, new option).
        let mut pick: Option<(f64, usize, u16)> = None;
        for (x, (m, o)) in sizes.iter().enumerate() {
            let now = t.demand(*m, *o);
            let cost_now = t.option_cost(*m, *o);
            for &c in t.options_by_cost(*m) {
                let cand = t.demand(*m, c);
                // Only smaller in no dimension larger, and making room where it is short.
                if (0..dims).any(|k| cand[k] > now[k] + 1e-12) {
                    continue;
                }
                let room: f64 = (0..dims).filter(|k| over[*k] > 0.0).map(|k| (now[k] - cand[k]).min(over[k]) / cap[k].max(1e-12)).sum();
                if room <= 1e-12 {
                    continue;
                }
                let rate = (t.option_cost(*m, c) - cost_now).max(0.0) / room;
                if pick.is_none_or(|p| rate < p.0) {
                    pick = Some((rate, x, c));
                }
            }
        }
        let (_, x, c) = pick?;
        let (m, o) = sizes[x];
        for (k, l) in load.iter_mut().enumerate() {
            *l += t.demand(m, c)[k] - t.demand(m, o)[k];
        }
        sizes[x].1 = c;
    }
    let cost = sizes.iter().map(|(m, o)| t.option_cost(*m, *o)).sum();
    Some((cost, sizes))
}

/// Gives every placed item the cheapest size option its host has room for (a smaller size
/// taken to fit somewhere may be more than the room left after later changes needs).
pub fn settle_options(t: &Tables<'_>, s: &mut Solution) {
    if !t.sized {
        return;
    }
    for i in 0..t.problem.items.len() as u32 {
        let h = s.host_of[i as usize];
        let o = s.option_of[i as usize];
        if h == NOWHERE {
            continue;
        }
        let cost_now = t.problem.items[i as usize].options[o as usize].cost;
        let cheaper = t.options_by_cost(i).iter().copied().take_while(|c| t.problem.items[i as usize].options[*c as usize].cost < cost_now);
        let cheaper: Vec<u16> = cheaper.collect();
        if cheaper.is_empty() {
            continue;
        }
        s.unplace(t, i);
        let fit = cheaper.into_iter().find(|c| s.fits(t, i, *c, h));
        s.set_option(i, fit.unwrap_or(o));
        s.place(t, i, h);
    }
}

/// The most sweeps of [`descend_sized`].
const MAX_DESCENT_SWEEPS: usize = 6;
/// Problems of at most this many items also try swapping every pair in [`descend_sized`].
const MAX_SWAP_ITEMS: usize = 64;

/// Local search where sizes are searched too: moves one item at a time to the host in use
/// where the change costs least, both hosts' members sized anew ([`cheapest_sizes`]), while a
/// move lowers the cost; then tries to close the emptiest host by moving each of its items
/// where it costs least (kept only if the whole costs less).
pub fn descend_sized(t: &Tables<'_>, s: &mut Solution, rng: &mut Rng) {
    if !t.sized {
        return;
    }
    let n = t.problem.items.len() as u32;
    let mut order: Vec<u32> = (0..n).collect();
    for sweep in 0..MAX_DESCENT_SWEEPS {
        rng.shuffle(&mut order);
        let mut improved = false;
        for &i in &order {
            if s.host_of[i as usize] != NOWHERE && move_where_cheaper(t, s, i) {
                improved = true;
            }
        }
        // Swaps once moves alone no longer help (small problems only: every pair is tried).
        if !improved && order.len() <= MAX_SWAP_ITEMS && sweep + 1 < MAX_DESCENT_SWEEPS {
            improved = swap_where_cheaper(t, s, &order);
        }
        if !improved {
            break;
        }
    }
    let used = s.hosts_by_fill(t);
    if used.len() >= 2 {
        let mut trial = s.clone();
        let h = used[0].1;
        let members = trial.members(h).to_vec();
        let mut closed = true;
        for i in members {
            if !move_where_cheaper_forced(t, &mut trial, i) {
                closed = false;
                break;
            }
        }
        if closed && trial.cost() < s.cost() - 1e-9 {
            *s = trial;
        }
    }
}

/// What host `h` costs in size options now.
fn sizes_cost(t: &Tables<'_>, s: &Solution, h: u32) -> f64 {
    s.members(h).iter().map(|m| t.option_cost(*m, s.option_of[*m as usize])).sum()
}

/// The best other host in use for placed item `i` and what moving it there changes (both
/// hosts re-sized; the host it leaves closes if `i` was alone there), with the new sizes of
/// the host it leaves and the host it joins.
fn best_move(t: &Tables<'_>, s: &Solution, i: u32) -> Option<(f64, u32, Sizes, Sizes)> {
    let from = s.host_of[i as usize];
    let item = &t.problem.items[i as usize];
    let stay = |h: u32| if item.current.is_some_and(|(c, _)| c != h) { item.move_cost } else { 0.0 };
    let (left_cost, left) = if s.members(from).len() == 1 {
        (-t.problem.hosts[from as usize].active_cost, Vec::new())
    } else {
        cheapest_sizes(t, from, s.members(from).iter().copied().filter(|m| *m != i))?
    };
    let leave = left_cost - sizes_cost(t, s, from) - stay(from) - t.pairs_cost(s, i, from);
    let mut best: Option<(f64, u32, Sizes, Sizes)> = None;
    for h in 0..t.problem.hosts.len() as u32 {
        if h == from || s.members(h).is_empty() {
            continue;
        }
        if let Some((after, sizes)) = sizes_to_fit(t, s, h, i) {
            let delta = leave + after - sizes_cost(t, s, h) + stay(h) + t.pairs_cost(s, i, h);
            if best.as_ref().is_none_or(|b| delta < b.0) {
                best = Some((delta, h, left.clone(), sizes));
            }
        }
    }
    best
}

fn apply_move(t: &Tables<'_>, s: &mut Solution, i: u32, to: u32, left: &[(u32, u16)], joined: &[(u32, u16)]) {
    let from = s.host_of[i as usize];
    s.unplace(t, i);
    for &(h, sizes) in &[(from, left), (to, joined)] {
        for &(m, o) in sizes {
            if m != i && s.option_of[m as usize] != o {
                s.unplace(t, m);
                s.set_option(m, o);
                s.place(t, m, h);
            }
        }
    }
    let o = joined.iter().find(|(m, _)| *m == i).map_or(s.option_of[i as usize], |(_, o)| *o);
    s.set_option(i, o);
    s.place(t, i, to);
}

/// Moves `i` to its best other host if that lowers the cost; whether it did.
fn move_where_cheaper(t: &Tables<'_>, s: &mut Solution, i: u32) -> bool {
    match best_move(t, s, i) {
        Some((delta, to, left, joined)) if delta < -1e-9 => {
            apply_move(t, s, i, to, &left, &joined);
            true
        }
        _ => false,
    }
}

/// Moves `i` to its best other host whatever it costs; whether there was one.
fn move_where_cheaper_forced(t: &Tables<'_>, s: &mut Solution, i: u32) -> bool {
    match best_move(t, s, i) {
        Some((_, to, left, joined)) => {
            apply_move(t, s, i, to, &left, &joined);
            true
        }
        None => false,
    }
}

/// What the pair terms of placed items `i` and `j` cost where they are, or (`swapped`) with
/// their hosts exchanged (a term between the two counted once: the swap leaves their
/// distance as it is).
fn swap_pairs(t: &Tables<'_>, s: &Solution, i: u32, j: u32, swapped: bool) -> f64 {
    if !t.in_pairs(i) && !t.in_pairs(j) {
        return 0.0;
    }
    let (hi, hj) = (s.host_of[i as usize], s.host_of[j as usize]);
    let (at_i, at_j) = if swapped { (hj, hi) } else { (hi, hj) };
    t.pairs_cost_besides(s, i, at_i, j) + t.pairs_cost_besides(s, j, at_j, i) + t.shared_pairs_cost(i, j, t.distance(at_i, at_j))
}

/// Swaps two items of different hosts where that lowers the cost (both hosts sized anew);
/// whether any swap was made.
fn swap_where_cheaper(t: &Tables<'_>, s: &mut Solution, order: &[u32]) -> bool {
    let mut improved = false;
    for (x, &i) in order.iter().enumerate() {
        for &j in &order[x + 1..] {
            let (hi, hj) = (s.host_of[i as usize], s.host_of[j as usize]);
            if hi == NOWHERE || hj == NOWHERE || hi == hj {
                continue;
            }
            let moved = |m: u32, h: u32| {
                let item = &t.problem.items[m as usize];
                if item.current.is_some_and(|(c, _)| c != h) { item.move_cost } else { 0.0 }
            };
            let before = sizes_cost(t, s, hi) + sizes_cost(t, s, hj) + moved(i, hi) + moved(j, hj) + swap_pairs(t, s, i, j, false);
            let into_hi = s.members(hi).iter().copied().filter(|m| *m != i).chain(std::iter::once(j));
            let into_hj = s.members(hj).iter().copied().filter(|m| *m != j).chain(std::iter::once(i));
            if s.members(hi).iter().any(|m| *m != i && t.share_group(*m, j))
                || s.members(hj).iter().any(|m| *m != j && t.share_group(*m, i))
            {
                continue;
            }
            let Some((cost_i, sizes_i)) = cheapest_sizes(t, hi, into_hi) else { continue };
            let Some((cost_j, sizes_j)) = cheapest_sizes(t, hj, into_hj) else { continue };
            if cost_i + cost_j + moved(j, hi) + moved(i, hj) + swap_pairs(t, s, i, j, true) < before - 1e-9 {
                s.unplace(t, i);
                s.unplace(t, j);
                for &(m, o) in sizes_i.iter().chain(&sizes_j) {
                    if s.host_of[m as usize] != NOWHERE && s.option_of[m as usize] != o {
                        s.unplace(t, m);
                    }
                    if s.host_of[m as usize] == NOWHERE {
                        s.set_option(m, o);
                    }
                }
                for (h, sizes) in [(hi, &sizes_i), (hj, &sizes_j)] {
                    for &(m, _) in sizes.iter() {
                        if s.host_of[m as usize] == NOWHERE {
                            s.place(t, m, h);
                        }
                    }
                }
                improved = true;
            }
        }
    }
    improved
}
