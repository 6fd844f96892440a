#!/usr/bin/env python3
"""Trains presage's learned scorer: the probability that a candidate destination is short of CPU
or memory within the policy's horizon if the moving VMs land on it.

1. Rollouts. `presagectl simulate --record-candidates` replays the PlanetLab training days and
   Bitbrains' first three weeks (`--steps 6048`, one row in 8 kept) at four risk settings; every
   shortlist presage's ranking produced is recorded, each candidate with the decision core's own
   features (`decide/src/policy/learned.rs`, FEATURE_NAMES) and a label from what the traces did
   next: the destination's VMs plus the moving ones, over the next horizon steps, above its CPU
   capacity (or memory).
2. A small network (12 -> 32 -> 16 -> 1, ReLU, sigmoid; inputs standardised, folded into the
   first layer on export) fitted by Adam on the log loss; the last sixth of each set's steps
   picks the epoch.
3. Export to ONNX (`placement-shortfall-v1.onnx`) with `presage.features` and every feature's
   training range (`presage.trained_range`, the guardrail's bounds), and a parity fixture for
   tract (`shortfall-parity.json`).
4. Judged on data it never saw, the held-back PlanetLab days and Bitbrains' last week (replayed
   alone, `--from-step 6048`): its log loss, Brier score and AUC against the heuristic's own
   probability of the same event (the normal approximation, the `risk_at_capacity` feature);
   and by ablation (`--ablation`, or `--ablation-only MODEL`): presage's whole curve with and
   without the model, compared as curves (unserved demand at equal energy).

Reproduce (from the repository root, after `cargo build --release -p presagectl`; numpy and
onnx from requirements.txt, onnxruntime for the fixture):

    python3 models/train_scorer.py --data ../shared/data --out /tmp/scorer \
        --model models/placement-shortfall-v1.onnx --fixture models/fixtures/shortfall-parity.json
    python3 models/train_scorer.py --out /tmp/scorer --ablation-only models/placement-shortfall-v1.onnx
"""

import argparse
import csv
import glob
import json
import math
import os
import sys
import time

import numpy as np

FEATURES_VERSION = "shortfall-v1"
TRAIN_DAYS = ["20110303", "20110306", "20110309"]
HELD_BACK_DAYS = ["20110322", "20110325"]
BITBRAINS_MONTH = "2013-7"
# Bitbrains' first three weeks train; the last week (from this step) is held back.
BITBRAINS_HELD_BACK_FROM = 6048
TRAIN_RISKS = [0.2, 0.45, 0.7, 0.95]
PLANETLAB_CURVE = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0]
BITBRAINS_CURVE = [0.0, 0.1, 0.2, 0.4, 0.6]
SEED = 20261203


def simulate(args, traces, risks, extra, cfg_text=""):
    """presage over `traces` at each risk (tune_policy's runner), CloudSim's VM order for PlanetLab."""
    from tune_policy import simulate as run

    if any("planetlab" in t for t in traces):
        extra = extra + ["--vm-order", os.path.join(args.reference, "cloudsim", "vm_order")]
    return run(args, traces, risks, cfg_text, extra)


# A Bitbrains replay ranks about six times as many candidates per trace-day as a PlanetLab
# one (500 large VMs over 21 days): one in this many is kept, so that neither trace swamps
# the other.
BITBRAINS_RECORD_EVERY = 8


def training_sets(args):
    """(name, trace folders, extra arguments, one row kept in): the PlanetLab training days,
    Bitbrains' first three weeks."""
    return [
        ("planetlab-train", [os.path.join(args.data, "planetlab", d) for d in TRAIN_DAYS], [], 1),
        ("bitbrains-weeks-1-3", [os.path.join(args.data, "bitbrains-rnd", BITBRAINS_MONTH)], ["--steps", str(BITBRAINS_HELD_BACK_FROM)], BITBRAINS_RECORD_EVERY),
    ]


def held_back_sets(args):
    """Data the model never sees: the later PlanetLab days, Bitbrains' last week (replayed alone)."""
    return [
        ("planetlab-held-back", [os.path.join(args.data, "planetlab", d) for d in HELD_BACK_DAYS], [], 1),
        ("bitbrains-week-4", [os.path.join(args.data, "bitbrains-rnd", BITBRAINS_MONTH)], ["--from-step", str(BITBRAINS_HELD_BACK_FROM)], BITBRAINS_RECORD_EVERY),
    ]


def record(args, sets, folder):
    """Records every set's shortlists; returns (features, X, y, step, set index) over all."""
    parts = []
    for i, (name, traces, extra, every) in enumerate(sets):
        sub = os.path.join(folder, name)
        os.makedirs(sub, exist_ok=True)
        simulate(args, traces, TRAIN_RISKS, extra + ["--learned-model", "none", "--record-candidates", sub, "--record-every", str(every)])
        feats, X, y, step = load_rows(sub)
        parts.append((feats, X, y, step, np.full(len(y), i)))
    feats = parts[0][0]
    return feats, *(np.concatenate([p[k] for p in parts]) for k in range(1, 5))


def load_rows(folder):
    names, rows = None, []
    for path in sorted(glob.glob(os.path.join(folder, "*.csv"))):
        with open(path) as f:
            r = csv.reader(f)
            header = next(r)
            if names is None:
                names = header
            elif header != names:
                sys.exit(f"{path}: columns differ from the other files'")
            rows.extend([float(x) for x in line] for line in r)
    if not rows:
        sys.exit(f"{folder}: no candidate rows recorded")
    a = np.array(rows)
    feats = names[3:-3]
    X = a[:, 3 : 3 + len(feats)].astype(np.float32)
    y = np.maximum(a[:, -2], a[:, -1]).astype(np.float32)
    return feats, X, y, a[:, 0]


class Net:
    def __init__(self, sizes, rng):
        self.W = [rng.normal(0, np.sqrt(2.0 / a), (a, b)).astype(np.float32) for a, b in zip(sizes, sizes[1:])]
        self.b = [np.zeros(b, np.float32) for b in sizes[1:]]

    def forward(self, X):
        hs = [X]
        for i, (W, b) in enumerate(zip(self.W, self.b)):
            z = hs[-1] @ W + b
            hs.append(np.maximum(z, 0) if i < len(self.W) - 1 else z)
        return hs

    def predict(self, X):
        return 1.0 / (1.0 + np.exp(-self.forward(X)[-1][:, 0]))


def logloss(p, y):
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def brier(p, y):
    return float(np.mean((p - y) ** 2))


def auc(p, y):
    order = np.argsort(p)
    ranks = np.empty(len(p))
    ranks[order] = np.arange(1, len(p) + 1)
    pos = y > 0.5
    n1, n0 = pos.sum(), (~pos).sum()
    if n1 == 0 or n0 == 0:
        return float("nan")
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def train(X, y, Xv, yv, epochs, rng):
    mu, sd = X.mean(0), X.std(0) + 1e-6
    Z, Zv = (X - mu) / sd, (Xv - mu) / sd
    net = Net([X.shape[1], 32, 16, 1], rng)
    params = net.W + net.b
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    lr, step, batch = 2e-3, 0, 512
    best = (float("inf"), None)
    for epoch in range(epochs):
        perm = rng.permutation(len(Z))
        for s in range(0, len(Z), batch):
            idx = perm[s : s + batch]
            hs = net.forward(Z[idx])
            p = 1 / (1 + np.exp(-hs[-1][:, 0]))
            g = ((p - y[idx]) / len(idx))[:, None].astype(np.float32)
            grads_W, grads_b = [None] * len(net.W), [None] * len(net.W)
            for i in reversed(range(len(net.W))):
                grads_W[i] = hs[i].T @ g
                grads_b[i] = g.sum(0)
                if i > 0:
                    g = (g @ net.W[i].T) * (hs[i] > 0)
            step += 1
            for k, (p_, gr) in enumerate(zip(params, grads_W + grads_b)):
                m[k] = 0.9 * m[k] + 0.1 * gr
                v[k] = 0.999 * v[k] + 0.001 * gr * gr
                p_ -= lr * (m[k] / (1 - 0.9**step)) / (np.sqrt(v[k] / (1 - 0.999**step)) + 1e-8)
        val = logloss(net.predict(Zv), yv)
        print(f"  epoch {epoch + 1}: validation log loss {val:.5f}", flush=True)
        if val < best[0]:
            best = (val, ([w.copy() for w in net.W], [b.copy() for b in net.b]))
        if epoch % 4 == 3:
            lr /= 2
    net.W, net.b = best[1]
    net.mu, net.sd = mu, sd
    return net


def folded(net):
    W0 = net.W[0] / net.sd[:, None]
    b0 = net.b[0] - (net.mu / net.sd) @ net.W[0]
    return [W0.astype(np.float32)] + net.W[1:], [b0.astype(np.float32)] + net.b[1:]


def export_onnx(net, ranges, feats, path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    Ws, bs = folded(net)
    nodes, inits, cur = [], [], "features"
    for i, (W, b) in enumerate(zip(Ws, bs)):
        inits += [numpy_helper.from_array(W, f"W{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("MatMul", [cur, f"W{i}"], [f"mm{i}"]))
        nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"z{i}"]))
        if i < len(Ws) - 1:
            nodes.append(helper.make_node("Relu", [f"z{i}"], [f"h{i}"]))
            cur = f"h{i}"
    nodes.append(helper.make_node("Sigmoid", [f"z{len(Ws) - 1}"], ["shortfall"]))
    graph = helper.make_graph(
        nodes,
        "presage-placement-shortfall",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", len(feats)])],
        [helper.make_tensor_value_info("shortfall", TensorProto.FLOAT, ["batch", 1])],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="presage-models")
    m.metadata_props.add(key="presage.features", value=FEATURES_VERSION)
    m.metadata_props.add(key="presage.feature_names", value=",".join(feats))
    m.metadata_props.add(key="presage.trained_range", value=json.dumps([[float(lo), float(hi)] for lo, hi in ranges]))
    onnx.checker.check_model(m)
    onnx.save(m, path)


def parity_fixture(model_path, X, path):
    import onnxruntime as ort

    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    rows = X[np.linspace(0, len(X) - 1, 12).astype(int)]
    out = sess.run(None, {"features": rows})[0][:, 0]
    with open(path, "w") as f:
        json.dump({"rows": rows.tolist(), "shortfall": out.tolist()}, f, indent=1)


def figures(name, p, y):
    return {"set": name, "rows": int(len(y)), "positives": float(y.mean()), "log_loss": logloss(p, y), "brier": brier(p, y), "auc": auc(p, y)}


# The weights of the learned term tried on the training sets; the one whose curve leaves the
# least demand unserved at equal energy there is the one judged on the held-back sets.
WEIGHTS = [2.0, 8.0, 16.0]


def learned_variant(weight):
    return (f"learned-w{weight:g}", True, f"[learned]\nweight = {weight}\n")


# The reference, and the learned term in place of the fit term (same weight as fit's).
HAND_SET = ("hand-set", False, "")
INSTEAD_OF_FIT = ("learned-instead-of-fit", True, "[weights]\nfit = 0.0\n[learned]\nweight = 2.0\n")


def curves(args, model_path, sets, variants):
    """presage's curve per variant and set, each point against the hand-set curve: a variant
    pays where the hand-set curve leaves more demand unserved at the same energy (curves
    compared, not single points: a setting that only slides along the curve gains nothing)."""
    from tune_policy import frontier, shipped_unserved_at

    out = []
    for name, traces, base, _ in sets:
        risks = BITBRAINS_CURVE if name.startswith("bitbrains") else PLANETLAB_CURVE
        curve = {}
        for label, learned, cfg in [HAND_SET] + [v for v in variants if v[0] != HAND_SET[0]]:
            extra = base + ["--learned-model", model_path if learned else "none"]
            started = time.time()
            reports = simulate(args, traces, risks, extra, cfg)
            took = time.time() - started
            curve[label] = frontier(reports)
            for risk in risks:
                rs = [r for r in reports if abs(r["risk"] - risk) < 1e-9]
                e, u, m = curve[label][risk]
                row = {"set": name, "ensemble": label, "risk": risk, "energy_over_oracle": e, "unserved_pct": u,
                       "migrations": m, "ping_pongs": int(sum(r["ping_pongs"] for r in rs)), "wall_s": took}
                if label != HAND_SET[0]:
                    at = shipped_unserved_at(curve[HAND_SET[0]], e)
                    row["hand_set_unserved_at_that_energy"] = at
                    row["ratio"] = (u / at) if at else None
                counts = [r["learned"] for r in rs if r.get("learned")]
                if counts:
                    judged = sum(c["judged"] for c in counts)
                    row["judged"] = judged
                    row["out_of_range"] = sum(c["out_of_range"] for c in counts)
                    row["disagreed"] = sum(c["disagreed"] for c in counts)
                    row["fallback_share"] = (row["out_of_range"] + row["disagreed"] + sum(c["failed"] for c in counts)) / max(judged, 1)
                out.append(row)
                print(json.dumps(row), flush=True)
    return out


def mean_log_ratio(rows, label):
    """The geometric mean of a variant's ratios (unserved / the hand-set curve's at equal energy)."""
    r = [math.log(x["ratio"]) for x in rows if x["ensemble"] == label and x.get("ratio")]
    return math.exp(sum(r) / len(r)) if r else float("inf")


def ablation(args, model_path):
    """The weight chosen on the training sets, then every variant judged on the held-back ones."""
    report = {}
    if args.weight is None:
        tried = curves(args, model_path, training_sets(args), [learned_variant(w) for w in WEIGHTS])
        scores = {w: mean_log_ratio(tried, learned_variant(w)[0]) for w in WEIGHTS}
        weight = min(WEIGHTS, key=lambda w: scores[w])
        report["weight_selection"] = {"rows": tried, "geometric_mean_ratio": {f"{w:g}": scores[w] for w in WEIGHTS}, "chosen": weight}
        print(f"weights on the training sets (geometric mean ratio): {scores}; chosen {weight:g}", flush=True)
    else:
        weight = args.weight
    variants = [learned_variant(2.0), INSTEAD_OF_FIT] + ([learned_variant(weight)] if weight != 2.0 else [])
    held = curves(args, model_path, held_back_sets(args), variants)
    report["held_back"] = held
    report["held_back_geometric_mean_ratio"] = {v[0]: mean_log_ratio(held, v[0]) for v in variants}
    print(json.dumps(report["held_back_geometric_mean_ratio"]), flush=True)
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--reference", default="../shared/reference")
    ap.add_argument("--presagectl", default="target/release/presagectl")
    ap.add_argument("--out", required=True, help="working folder: recorded candidates, the model, the report")
    ap.add_argument("--model", default=None, help="where to write the model (default: OUT/placement-shortfall-v1.onnx)")
    ap.add_argument("--fixture", default=None, help="where to write the tract parity fixture (default: OUT/shortfall-parity.json)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--ablation", action="store_true", help="run presage with and without the model on the held-back days")
    ap.add_argument("--ablation-only", metavar="MODEL", help="skip training: the ablation of this model")
    ap.add_argument("--weight", type=float, help="the ablation's learned weight (default: chosen on the training sets among WEIGHTS)")
    args = ap.parse_args()
    for d in [f"planetlab/{d}" for d in TRAIN_DAYS + HELD_BACK_DAYS] + [f"bitbrains-rnd/{BITBRAINS_MONTH}"]:
        if not os.path.isdir(os.path.join(args.data, d)):
            sys.exit(f"no {d} under {args.data} (pass --data)")
    os.makedirs(args.out, exist_ok=True)
    model_path = args.model or os.path.join(args.out, "placement-shortfall-v1.onnx")
    rng = np.random.default_rng(SEED)
    report = {}
    if args.ablation_only:
        report["ablation"] = ablation(args, args.ablation_only)
        with open(os.path.join(args.out, "ablation.json"), "w") as f:
            json.dump(report, f, indent=1)
        return

    started = time.time()
    feats, X, y, step, which = record(args, training_sets(args), os.path.join(args.out, "train"))
    _, Xh, yh, _, which_h = record(args, held_back_sets(args), os.path.join(args.out, "held-back"))
    report["rollout_s"] = time.time() - started
    print(f"rollouts: {len(y)} training candidates ({y.mean():.3%} short), {len(yh)} held back, {report['rollout_s']:.0f} s")

    # The last sixth of each set's steps picks the epoch.
    late = np.zeros(len(y), bool)
    for i in np.unique(which):
        mine = which == i
        late |= mine & (step >= np.quantile(step[mine], 5 / 6))
    started = time.time()
    net = train(X[~late], y[~late], X[late], y[late], args.epochs, rng)
    report["training_s"] = time.time() - started
    ranges = list(zip(X.min(0), X.max(0)))
    export_onnx(net, ranges, feats, model_path)
    parity_fixture(model_path, Xh, args.fixture or os.path.join(args.out, "shortfall-parity.json"))

    # The heuristic's own probability of the same event is the `risk_at_capacity` feature.
    h = feats.index("risk_at_capacity")
    report["held_back"] = []
    for i, (name, _, _, _) in enumerate(held_back_sets(args)):
        mine = which_h == i
        ph = net.predict((Xh[mine] - net.mu) / net.sd)
        report["held_back"] += [figures(f"{name} model", ph, yh[mine]), figures(f"{name} heuristic", Xh[mine, h].astype(np.float64), yh[mine])]
    for r in report["held_back"]:
        print(json.dumps(r))
    if args.ablation:
        report["ablation"] = ablation(args, model_path)
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"model: {model_path}; report: {os.path.join(args.out, 'report.json')}")


if __name__ == "__main__":
    main()
