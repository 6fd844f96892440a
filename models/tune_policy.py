#!/usr/bin/env python3
"""Tunes presage's policy settings in the simulator with sep-CMA-ES, and validates them on held-back data.

What it tunes (`--space`): `settings`, those the risk knob does not set (the ensemble's weights,
the assumed correlation between VMs, when a host counts as under-used, the economics of a move;
the knob sets the thresholds, saturation relief, `underload_power_ratio` and the failed-empty
limit at every point); or `knob`, the shape of the knob's curve itself (`KNOB_SPACE`).

Objective (lower is better): the candidate's curve against the shipped settings' curve on the
training days. The candidate runs at several points of the knob (`--risks`); at each point, the
log of its unserved demand over the shipped curve's at the same energy over the oracle
(interpolated between the shipped curve's points, log scale; extrapolated from its end segment
outside it), averaged over the points. A candidate that merely slides along the shipped curve
scores 0; only a curve nearer the origin scores below 0. (A scalar of energy + lambda x unserved,
this script's first objective, rewarded sliding along the curve, and its learned settings left up
to 2.3 x more demand unserved at equal energy on held-back data.) Added to it, MIGRATION_WEIGHT
(0.5) x the mean log of the candidate's migrations over the shipped curve's at the same energy
(interpolated linearly): a search judged on unserved demand alone bought its gain with moves
and broke a held-back day's budget. On top: a penalty for each run over the issue's migration
budget that day (0.1 x the fewest migrations of CloudSim's classic policies,
`../shared/reference/cloudsim/planetlab-public-days.csv`) and for any ping-pong.

Method: separable CMA-ES (Ros & Hansen, "A simple modification in CMA-ES achieving linear time
and space complexity", PPSN 2008): a diagonal covariance, written here in plain Python (no
dependencies). Each setting is searched on a 0..1 scale between bounds (a log scale for the
ones spanning decades); the start is the shipped settings, or those of `--start`. Training runs
are held within `--budget-share` (0.9) of each day's migration budget, so that the learned
settings leave room on days the search does not see.

Split: PlanetLab days 20110303, 20110306, 20110309 train (the forecast model's training days);
20110322 and 20110325 validate, with Bitbrains when --bitbrains is given (a trace the search
never saw: its held-back last week, or the whole month). The learned settings pay only if, on
every validation set, against the shipped curve at the same energy, unserved demand x
migrations^MIGRATION_WEIGHT comes under PAYS_BELOW beyond the noise of single points (geometric
means of the ratios over the points), with no more demand unserved (its geometric mean ratio
<= 1), within every day's migration budget and without ping-pong (`set_pays`).

    python3 models/tune_policy.py --data ../shared/data --out /tmp/tuning --bitbrains week   # about 25 min on 2 cores
    python3 models/tune_policy.py --data ../shared/data --out /tmp/tuning --validate /tmp/tuning/learned.toml --bitbrains month
    python3 models/tune_policy.py --data ../shared/data --out /tmp/v --space knob --validate shipped --against hand-set --bitbrains week
"""

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time

# The geometric mean of unserved-demand ratios (learned curve over shipped curve at equal energy)
# a validation set must come under for the learned settings to pay: single points scatter by
# 5-15 %, so only a consistent shift counts.
PAYS_BELOW = 0.95
# What migrations count for against unserved demand in the objective: a curve that makes 20 %
# fewer migrations at equal energy is worth one that leaves 10 % less demand unserved. The
# shipped curve uses up to 0.096-0.099 x the fewest classic migrations on a public day, against
# a target of 0.1 x, so room in that budget is a gain an operator sees on other days.
MIGRATION_WEIGHT = 0.5
# Penalty per run over its day's migration budget (per unit of the budget exceeded, at least
# this much), and per ping-pong.
OVER_BUDGET_PENALTY = 1.0
PING_PONG_PENALTY = 0.5
# The curve must keep the shipped curve's span: a search judged at equal energy alone found a
# curve far better where it ran (held-back PlanetLab, 0.4 x the unserved demand) that no longer
# reached the hot end (1.20 x the oracle at risk 1, against 1.14) nor, on Bitbrains, the cool
# end (0.032 % unserved at risk 0, against 0.0085 %). Per unit of the candidate's energy at its
# highest risk over the shipped curve's there (above 1), and per unit of the log of its unserved
# demand at its lowest risk over the shipped curve's (above 0). (At 10 per unit of energy, a
# search let the hot end slip 2.4 % for a curve 0.45 x the unserved demand where it ran.)
SPAN_ENERGY_WEIGHT = 40.0
SPAN_UNSERVED_WEIGHT = 1.0
# On validation, the ends may fall short by this much (noise of single points) and still count.
SPAN_ENERGY_TOLERANCE = 0.01
SPAN_UNSERVED_TOLERANCE = 0.25
# The shipped curve's points on the training days (the reference every candidate is judged against).
REFERENCE_RISKS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
TRAIN_DAYS = ["20110303", "20110306", "20110309"]
VALIDATE_DAYS = ["20110322", "20110325"]

# (name, shipped value, low, high, log scale); "weights.x" goes to the [weights] table.
SPACE = [
    ("correlation", 0.0, 0.0, 0.5, False),
    ("underload_utilisation", 0.5, 0.2, 0.8, False),
    ("benefit_horizon_s", 7200.0, 1800.0, 28800.0, True),
    ("overload_cost_w", 100.0, 20.0, 1000.0, True),
    ("move_cost_j", 5000.0, 500.0, 50000.0, True),
    ("min_residence_s", 900.0, 300.0, 3600.0, False),
    ("cooldown_s", 3900.0, 1800.0, 14400.0, True),
    ("weights.fit", 2.0, 0.0, 4.0, False),
    ("weights.energy", 1.0, 0.0, 4.0, False),
    ("weights.efficiency", 1.0, 0.0, 4.0, False),
    ("weights.packing", 0.5, 0.0, 4.0, False),
    ("weights.balance", 0.0, 0.0, 4.0, False),
    ("weights.migration", 0.1, 0.0, 2.0, False),
]


def to_unit(v, lo, hi, log):
    if log:
        return (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return (v - lo) / (hi - lo)


def from_unit(u, lo, hi, log):
    u = min(1.0, max(0.0, u))
    if log:
        return math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    return lo + u * (hi - lo)


# `--space knob`: the shape of the risk knob's curve (`[policy.presage.knob]`, decide's
# `KnobShape`): how the thresholds, the headroom, the spread and relief move with the appetite.
# The ensemble's weights and the rest stay as shipped, and so does the spread counted above a
# VM's p90 (`burst_*`): it is there for bursty VMs (Bitbrains' on/off batch jobs) that the
# PlanetLab training days lack, so a search on them alone would tune it away unseen.
# The values are the shipped (learned, `KnobShape::learned`) shape, the reference a new search
# is judged against; the hand-set one it replaced is in `KNOB_HAND_SET_FILE`.
KNOB_SPACE = [
    ("knob.placement_at_0", 0.011834616520394197, 0.005, 0.08, True),
    # At up to 100 the search took the placement risk to 1 at risk 1 (any destination goes,
    # saturations relieved at once): 0.08 % unserved at 1.14 x the oracle, but 1.12 x a held-back
    # day's migration budget.
    ("knob.placement_growth", 50.0, 5.0, 50.0, True),
    ("knob.exit_share", 0.8141411893388513, 0.4, 0.9, False),
    ("knob.consolidation_margin", 0.6360084793006193, 0.0, 0.8, False),
    ("knob.safe_at_0", 0.8552737406178597, 0.7, 1.0, False),
    ("knob.relief_share_at_0", 0.0, 0.0, 0.5, False),
    ("knob.relief_share_per_risk", 0.35, 0.0, 0.5, False),
    ("knob.relief_share_exponent", 2.312863816702529, 1.0, 8.0, True),
    ("knob.underload_power_ratio", 1.3101881446914156, 1.05, 2.0, False),
]
# The hand-set shape (`KnobShape::hand_set`), the reference with `--against hand-set`: the file
# an operator puts it back with.
KNOB_HAND_SET_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "knob-hand-set.toml")
SPACES = {"settings": SPACE, "knob": KNOB_SPACE}


def settings(x, space=SPACE):
    return {name: from_unit(u, lo, hi, log) for u, (name, _, lo, hi, log) in zip(x, space)}


def toml_text(s):
    """Flat keys first, then a table per dotted prefix (`weights.fit` goes to [weights])."""
    top = [f"{k} = {v!r}" for k, v in s.items() if "." not in k]
    lines = list(top)
    for table in sorted({k.split(".", 1)[0] for k in s if "." in k}):
        lines += ["", f"[{table}]"] + [f"{k.split('.', 1)[1]} = {v!r}" for k, v in s.items() if k.startswith(table + ".")]
    return "\n".join(lines) + "\n"


def simulate(args, traces, risks, cfg_text, extra=()):
    """Runs presage over `traces` at each risk; returns the JSON reports."""
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(cfg_text)
        path = f.name
    try:
        cmd = [args.presagectl, "simulate", "--policy", "presage", "--sweep", "risk=" + ",".join(map(str, risks)), "-o", "json"]
        for t in traces:
            cmd += ["--trace", t]
        if cfg_text:
            cmd += ["--presage-config", path]
        cmd += list(extra)
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            sys.exit(f"presagectl failed ({' '.join(cmd)}):\n{out.stderr[-2000:]}")
        text = out.stdout.strip()
        return json.loads(text) if text.startswith("[") else [json.loads(l) for l in text.splitlines() if l.strip()]
    finally:
        os.unlink(path)


def migration_budgets(reference_dir):
    """Day -> the issue's migration budget: 0.1 x the fewest migrations any classic policy made
    that day in CloudSim (policies that never migrate aside); {} when the figures are missing."""
    import csv

    path = os.path.join(reference_dir, "cloudsim", "planetlab-public-days.csv")
    fewest = {}
    if not os.path.exists(path):
        return fewest
    with open(path) as f:
        for row in csv.DictReader(f):
            m = int(row["migrations"])
            if m > 0:
                fewest[row["day"]] = min(fewest.get(row["day"], m), m)
    return {d: 0.1 * m for d, m in fewest.items()}


def curve_unserved_at(curve, energy):
    """`curve`'s unserved demand at `energy` (log scale, interpolated; outside the curve,
    extrapolated from its end segment), or None when the curve has fewer than two usable points."""
    pts = sorted((e, u) for e, u, _ in curve.values() if u > 0)
    if len(pts) < 2:
        return None
    inside = shipped_unserved_at(curve, energy)
    if inside is not None:
        return inside
    (e0, u0), (e1, u1) = pts[:2] if energy < pts[0][0] else pts[-2:]
    if e1 == e0:
        return u0 if energy < pts[0][0] else u1
    slope = (math.log(u1) - math.log(u0)) / (e1 - e0)
    return math.exp(math.log(u0) + slope * (energy - e0))


def curve_migrations_at(curve, energy):
    """`curve`'s migrations at `energy`, interpolated linearly between its points (the nearest
    end point's outside them), or None for an empty curve."""
    pts = sorted((e, m) for e, _, m in curve.values())
    if not pts:
        return None
    if energy <= pts[0][0]:
        return pts[0][1]
    for (e0, m0), (e1, m1) in zip(pts, pts[1:]):
        if e0 <= energy <= e1:
            return m0 if e1 == e0 else m0 + (energy - e0) / (e1 - e0) * (m1 - m0)
    return pts[-1][1]


def curve_terms(reports, reference):
    """The mean log ratios, over the risk points of `reports`, of unserved demand and of
    migrations against `reference` at equal energy (None where nothing compares)."""
    unserved, moves = [], []
    for e, u, m in frontier(reports).values():
        at = curve_unserved_at(reference, e)
        if at:
            unserved.append(math.log(max(u, 1e-6) / at))
        ref_m = curve_migrations_at(reference, e)
        if ref_m:
            moves.append(math.log(max(m, 1.0) / ref_m))
    mean = lambda v: sum(v) / len(v) if v else None
    return mean(unserved), mean(moves)


def span_shortfall(curve, reference):
    """How far `curve` (risk -> (energy, unserved, migrations)) falls short of `reference`'s ends
    at the same risks: (its energy at its highest risk over the reference's there, minus 1; the
    log of its unserved demand at its lowest risk over the reference's there), each at least 0;
    None where the reference lacks that risk."""
    if not curve:
        return None, None
    lo, hi = min(curve), max(curve)
    hot = max(0.0, curve[hi][0] / reference[hi][0] - 1.0) if hi in reference else None
    cool = max(0.0, math.log(max(curve[lo][1], 1e-6) / max(reference[lo][1], 1e-6))) if lo in reference else None
    return hot, cool


def curve_objective(reports, reference, budgets):
    """The mean log ratio of unserved demand against `reference` at equal energy over the risk
    points of `reports`, plus MIGRATION_WEIGHT x that of migrations, plus the span, migration-
    budget and ping-pong penalties (see the module)."""
    unserved, moves = curve_terms(reports, reference)
    hot, cool = span_shortfall(frontier(reports), reference)
    penalty = SPAN_ENERGY_WEIGHT * (hot or 0.0) + SPAN_UNSERVED_WEIGHT * (cool or 0.0)
    for r in reports:
        budget = budgets.get(r["day"])
        if budget and r["migrations"] > budget:
            penalty += OVER_BUDGET_PENALTY * max(0.1, r["migrations"] / budget - 1.0)
        penalty += PING_PONG_PENALTY * r["ping_pongs"]
    return (1.0 if unserved is None else unserved) + MIGRATION_WEIGHT * (moves or 0.0) + penalty


def sep_cma_es(f, x0, sigma, population, generations, seed, log):
    """Minimises f from x0; returns (best x, best value)."""
    rng = random.Random(seed)
    n = len(x0)
    lam = population
    mu = lam // 2
    w = [math.log(mu + 0.5) - math.log(i + 1) for i in range(mu)]
    sw = sum(w)
    w = [v / sw for v in w]
    mueff = 1.0 / sum(v * v for v in w)
    cs = (mueff + 2) / (n + mueff + 5)
    ds = 1 + 2 * max(0.0, math.sqrt((mueff - 1) / (n + 1)) - 1) + cs
    cc = (4 + mueff / n) / (n + 4 + 2 * mueff / n)
    c1 = 2 / ((n + 1.3) ** 2 + mueff)
    cmu = min(1 - c1, 2 * (mueff - 2 + 1 / mueff) / ((n + 2) ** 2 + mueff))
    # sep-CMA-ES learns the diagonal faster.
    c1, cmu = min(1.0, c1 * (n + 2) / 3), min(1.0, cmu * (n + 2) / 3)
    if c1 + cmu > 1:
        s = c1 + cmu
        c1, cmu = c1 / s, cmu / s
    chi = math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n * n))
    m, C, ps, pc = list(x0), [1.0] * n, [0.0] * n, [0.0] * n
    best = (list(x0), f(list(x0), "start"))
    for g in range(generations):
        pop = []
        for k in range(lam):
            z = [rng.gauss(0, 1) for _ in range(n)]
            y = [math.sqrt(C[i]) * z[i] for i in range(n)]
            x = [m[i] + sigma * y[i] for i in range(n)]
            pop.append((f(x, f"gen {g + 1} #{k + 1}"), z, y, x))
        pop.sort(key=lambda p: p[0])
        if pop[0][0] < best[1]:
            best = (pop[0][3], pop[0][0])
        yw = [sum(w[j] * pop[j][2][i] for j in range(mu)) for i in range(n)]
        zw = [sum(w[j] * pop[j][1][i] for j in range(mu)) for i in range(n)]
        m = [m[i] + sigma * yw[i] for i in range(n)]
        ps = [(1 - cs) * ps[i] + math.sqrt(cs * (2 - cs) * mueff) * zw[i] for i in range(n)]
        norm_ps = math.sqrt(sum(v * v for v in ps))
        hs = norm_ps / math.sqrt(1 - (1 - cs) ** (2 * (g + 1))) < (1.4 + 2 / (n + 1)) * chi
        pc = [(1 - cc) * pc[i] + (math.sqrt(cc * (2 - cc) * mueff) * yw[i] if hs else 0.0) for i in range(n)]
        for i in range(n):
            rank_mu = sum(w[j] * pop[j][2][i] ** 2 for j in range(mu))
            C[i] = (1 - c1 - cmu) * C[i] + c1 * (pc[i] ** 2 + (0 if hs else cc * (2 - cc) * C[i])) + cmu * rank_mu
        sigma *= math.exp((cs / ds) * (norm_ps / chi - 1))
        log(f"generation {g + 1}: best {pop[0][0]:.4f}, median {pop[lam // 2][0]:.4f}, sigma {sigma:.3f}, best so far {best[1]:.4f}")
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data", help="the shared data folder")
    p.add_argument("--reference", default=None, help="the shared reference folder (default: beside --data)")
    p.add_argument("--presagectl", default="target/release/presagectl")
    p.add_argument("--out", required=True, help="folder for the learned settings and the log")
    p.add_argument("--space", choices=sorted(SPACES), default="settings",
                   help="what is searched: the settings the knob does not set, or the shape of the knob's curve")
    p.add_argument("--risks", default="0.2,0.5,0.8,1", help="points of the knob every candidate runs at")
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--generations", type=int, default=6)
    p.add_argument("--sigma", type=float, default=0.2, help="initial step on the 0..1 scale")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--bitbrains", choices=["week", "month"], help="also validate on Bitbrains: its held-back last week "
                   "(about 1 min a point) or the whole month (about 4 min a point)")
    p.add_argument("--validate", help="skip the search: validate the settings in this file (as written to learned.toml), "
                   "or `shipped` for the shipped ones")
    p.add_argument("--against", choices=["shipped", "hand-set"], default="shipped",
                   help="the reference curve: the shipped settings, or (with --space knob) the hand-set knob shape "
                   "the learned one replaced (to measure what learning it bought)")
    p.add_argument("--start", help="start the search at the settings in this file (the reference stays the shipped settings)")
    p.add_argument("--budget-share", type=float, default=0.9,
                   help="the share of each training day's migration budget a candidate may use without penalty "
                        "(below 1 leaves room for days the search does not see)")
    args = p.parse_args()
    planetlab = os.path.join(args.data, "planetlab")
    reference_dir = args.reference or os.path.join(os.path.dirname(args.data.rstrip("/")), "reference")
    order = os.path.join(reference_dir, "cloudsim", "vm_order")
    for d in TRAIN_DAYS + VALIDATE_DAYS:
        if not os.path.isdir(os.path.join(planetlab, d)):
            sys.exit(f"PlanetLab day {d} not found under {planetlab} (give --data)")
    if args.bitbrains and not os.path.isdir(os.path.join(args.data, "bitbrains-rnd", "2013-7")):
        sys.exit(f"bitbrains-rnd/2013-7 not found under {args.data}")
    if not os.path.exists(args.presagectl):
        sys.exit(f"{args.presagectl} not found: cargo build --release -p presagectl")
    os.makedirs(args.out, exist_ok=True)
    risks = [float(r) for r in args.risks.split(",")]
    budgets = migration_budgets(reference_dir)
    training_budgets = {d: b * args.budget_share for d, b in budgets.items()}
    extra = ["--vm-order", order] if os.path.isdir(order) else []
    train = [os.path.join(planetlab, d) for d in TRAIN_DAYS]
    logf = open(os.path.join(args.out, "log.jsonl"), "w")

    def log(msg):
        print(msg, flush=True)

    started = time.time()
    space = SPACES[args.space]
    x0 = [to_unit(v, lo, hi, log_) for _, v, lo, hi, log_ in space]
    shipped_settings = settings(x0, space)
    if args.against == "hand-set":
        if args.space != "knob":
            sys.exit("--against hand-set compares knob shapes: give --space knob")
        hand_set = knob_hand_set()
        x0 = [to_unit(hand_set[name], lo, hi, log_) for name, _, lo, hi, log_ in space]
    summary = {"against": args.against}
    if args.validate == "shipped":
        learned = shipped_settings
    elif args.validate:
        with open(args.validate) as f:
            learned = read_toml_settings(f.read())
    else:
        # The reference: the shipped settings' curve on the training days.
        shipped_train = frontier(simulate(args, train, REFERENCE_RISKS, toml_text(settings(x0, space)), extra))
        log(f"{args.against} curve on the training days: {shipped_train} ({time.time() - started:.0f} s)")
        seen = {}

        def objective(x, label):
            s = settings(x, space)
            reports = simulate(args, train, risks, toml_text(s), extra)
            v = curve_objective(reports, shipped_train, training_budgets)
            logf.write(json.dumps({"label": label, "objective": v, "settings": s,
                                   "runs": [{k: r[k] for k in ("day", "risk", "energy_over_oracle", "overall_sla_violation_pct", "migrations", "ping_pongs")} for r in reports]}) + "\n")
            logf.flush()
            log(f"{label}: {v:.4f} ({time.time() - started:.0f} s)")
            seen.setdefault(label, v)
            return v

        start = x0
        if args.start:
            with open(args.start) as f:
                given = read_toml_settings(f.read())
            start = [to_unit(given.get(name, v), lo, hi, log_) for name, v, lo, hi, log_ in space]
        x, v = sep_cma_es(objective, start, args.sigma, args.population, args.generations, args.seed, log)
        learned = settings(x, space)
        summary.update({"training_objective": {"start": seen["start"], "learned": v}, "tuning_s": time.time() - started,
                        "evaluations": args.population * args.generations + 1, "shipped_training_curve": {str(r): c for r, c in shipped_train.items()}})
        with open(os.path.join(args.out, "learned.toml"), "w") as f:
            f.write(toml_text(learned))
    # Validation: the learned settings' curve against the shipped one on data the search never
    # saw, point by point at equal energy.
    sets = [("planetlab-held-back", [os.path.join(planetlab, d) for d in VALIDATE_DAYS], extra)]
    bitbrains = [os.path.join(args.data, "bitbrains-rnd", "2013-7")]
    if args.bitbrains == "week":
        sets.append(("bitbrains-week-4", bitbrains, ["--from-step", "6048"]))
    elif args.bitbrains == "month":
        sets.append(("bitbrains-2013-7", bitbrains, []))
    validation = {}
    started = time.time()
    for name, traces, ex in sets:
        curve_risks = REFERENCE_RISKS if name.startswith("planetlab") else [0.0, 0.05, 0.1, 0.2, 0.4, 0.6]
        shipped_reports = simulate(args, traces, curve_risks, toml_text(settings(x0, space)), ex)
        tuned_reports = simulate(args, traces, curve_risks, toml_text(learned), ex)
        shipped, tuned = frontier(shipped_reports), frontier(tuned_reports)
        rows = []
        for r, (e, u, m) in sorted(tuned.items()):
            at = shipped_unserved_at(shipped, e)
            at_m = curve_migrations_at(shipped, e)
            moves = (max(m, 1.0) / at_m) if at_m else None
            runs = [q for q in tuned_reports if q["risk"] == r]
            over = [q["day"] for q in runs if budgets.get(q["day"]) and q["migrations"] > budgets[q["day"]]]
            rows.append({"risk": r, "energy_over_oracle": e, "unserved_pct": u, "migrations": m, "over_budget_days": over,
                         "ping_pongs": sum(q["ping_pongs"] for q in runs),
                         "shipped_unserved_at_that_energy": at, "ratio": (u / at) if at else None,
                         "shipped_migrations_at_that_energy": at_m, "migration_ratio": moves})
            log(f"{name} risk {r}: learned {e:.3f} x oracle, {u:.4f} % unserved, {m:.0f} migrations; {args.against} curve at that energy: "
                + (f"{at:.4f} % (ratio {u / at:.2f})" if at else "outside its range")
                + (f", {at_m:.0f} migrations (ratio {moves:.2f})" if at_m else ""))
        hot, cool = span_shortfall(tuned, shipped)
        log(f"{name}: the learned curve's ends against the {args.against} one's: hot end energy +{hot:.3f}, cool end unserved log +{cool:.3f}")
        gm = geometric_mean([row["ratio"] for row in rows])
        gm_moves = geometric_mean([row["migration_ratio"] for row in rows])
        combined = gm * gm_moves ** MIGRATION_WEIGHT if gm is not None and gm_moves is not None else None
        validation[name] = {"shipped": {str(r): v for r, v in sorted(shipped.items())}, "learned": rows, "geometric_mean_ratio": gm,
                            "geometric_mean_migration_ratio": gm_moves, "combined": combined,
                            "span_shortfall": {"hot_end_energy": hot, "cool_end_log_unserved": cool}}
        log(f"{name}: geometric mean ratio {gm if gm is None else round(gm, 3)}, migrations {gm_moves if gm_moves is None else round(gm_moves, 3)}, "
            f"combined {combined if combined is None else round(combined, 3)} ({time.time() - started:.0f} s)")
    pays = all(set_pays(v) for v in validation.values())
    summary.update({"learned": learned, "validation": validation, "pays": pays, "validation_s": time.time() - started})
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    log(f"learned settings {'pay' if pays else 'do not pay'} on the validation data (unserved demand x migrations^{MIGRATION_WEIGHT} against the "
        + f"{args.against} curve at the same energy, geometric means: " + ", ".join(f"{k} {v['combined']}" for k, v in validation.items())
        + f"); {args.out}/summary.json")


def set_pays(v):
    """Whether the learned settings pay on one validation set (an entry of summary.json's
    "validation"): unserved demand x migrations^MIGRATION_WEIGHT at most PAYS_BELOW of the shipped
    curve's at equal energy (geometric means over the points), no more demand unserved than it,
    reaching the shipped curve's ends (SPAN_*_TOLERANCE), within every day's migration budget and
    without ping-pong."""
    span = v.get("span_shortfall", {})
    return (v["combined"] is not None and v["combined"] <= PAYS_BELOW and v["geometric_mean_ratio"] <= 1.0
            and (span.get("hot_end_energy") or 0.0) <= SPAN_ENERGY_TOLERANCE
            and (span.get("cool_end_log_unserved") or 0.0) <= SPAN_UNSERVED_TOLERANCE
            and all(not row["over_budget_days"] and row["ping_pongs"] == 0 for row in v["learned"]))


def geometric_mean(values):
    values = [v for v in values if v is not None]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def frontier(reports):
    """risk -> (energy over the oracle, unserved %, migrations), means over the traces."""
    out = {}
    for r in sorted({q["risk"] for q in reports}):
        rs = [q for q in reports if q["risk"] == r]
        out[r] = tuple(sum(q[k] for q in rs) / len(rs) for k in ("energy_over_oracle", "overall_sla_violation_pct", "migrations"))
    return out


def shipped_unserved_at(curve, energy):
    """The shipped curve's unserved demand at `energy`, interpolated between the two points around
    it (log scale of unserved); None outside the curve's range."""
    pts = sorted((e, u) for e, u, _ in curve.values())
    for (e0, u0), (e1, u1) in zip(pts, pts[1:]):
        if e0 <= energy <= e1 and u0 > 0 and u1 > 0:
            t = 0.0 if e1 == e0 else (energy - e0) / (e1 - e0)
            return math.exp(math.log(u0) + t * (math.log(u1) - math.log(u0)))
    return None


def read_toml_settings(text):
    """The settings of a file written by toml_text (flat keys and tables such as [weights])."""
    out, prefix = {}, ""
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            prefix = line.strip("[]") + "."
            continue
        k, v = (t.strip() for t in line.split("=", 1))
        out[prefix + k] = float(v)
    return out


def knob_hand_set():
    """The hand-set knob shape, as `--space knob` names its settings (`knob.placement_at_0`, ...)."""
    with open(KNOB_HAND_SET_FILE) as f:
        return read_toml_settings(f.read())


if __name__ == "__main__":
    main()
