"""Trains presage's quantile forecasters and exports them to ONNX.

    python train.py --data ../../shared/data --out .

Split (the model card's evaluation protocol):
  PlanetLab: train on 20110303, 20110306, 20110309, leaving out every VM that also appears on an
             evaluation day; evaluate on 20110322 and 20110325 (later days, unseen VMs).
  Bitbrains: every month under bitbrains-rnd/ (folders YYYY-M; 2013-7 in ../shared/data). VMs
             in name order (over all those months), every fifth (positions 0, 5, 10, ...) held
             out; train on the others' first three weeks (steps < 6048) of every month; evaluate
             the held-out VMs from step 6048 of the newest month trained on. With
             --hold-back-month the newest month is left out of training altogether, to be
             measured as a month never seen (`presagectl forecast-eval --trace` on it).
  Agent demand archives (--archive DIR, repeatable; `[forecast] archive_dir` of the hosts,
             gathered): every month folder in them is trained on whole, every VM; train.py's
             own check stays on the public held-out VMs. To measure a retrained model on the
             fleet's newest month, train with --hold-back-month and run forecast-eval on it.
The figures in README.md come from `presagectl forecast-eval` (Rust, the agent's code) on the
evaluation data; this script prints its own quick check of the same metric for model selection.
"""

import argparse
import collections
import hashlib
import json
import os
import sys
import time

import numpy as np

from presage_models import features as F
from presage_models import traces

PL_TRAIN = ["20110303", "20110306", "20110309"]
PL_EVAL = ["20110322", "20110325"]
BB_SPLIT_STEP = 6048
QUANTILES = np.array([0.1, 0.5, 0.9], dtype=np.float32)


def series_dataset(x, start_s, t_from, t_to, stride):
    """Features and 12-step targets for forecasts at t in [t_from, t_to) (t_to <= len - 12)."""
    x = np.asarray(x, dtype=np.float32)
    ts = list(range(max(t_from, F.WINDOW), min(t_to, len(x) - F.HORIZONS + 1), stride))
    if not ts:
        return None
    X = F.features_batch(x, ts, start_s)
    Y = np.stack([x[t:t + F.HORIZONS] for t in ts])
    return X, Y


def _series_dataset(args):
    return series_dataset(*args)


def datasets(jobs):
    """series_dataset over many series, on every core."""
    import multiprocessing

    with multiprocessing.Pool(os.cpu_count() or 1) as pool:
        return collect(pool.map(_series_dataset, jobs, chunksize=4))


def collect(parts):
    parts = [p for p in parts if p is not None]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def planetlab(data, days, exclude=(), stride=1):
    jobs = []
    for d in days:
        for name, x in traces.planetlab_day(os.path.join(data, "planetlab", d)).items():
            if name in exclude:
                continue
            jobs.append((x, 0, F.WINDOW, len(x), stride))
    return datasets(jobs)


class Month(collections.namedtuple("Month", "name folder archive")):
    """A month of traces: its YYYY-M name, its folder, and whether it comes from an agent demand
    archive (else it is a public Bitbrains month)."""

    @property
    def label(self):
        return f"{os.path.dirname(self.folder)}:{self.name}" if self.archive else self.name


def bitbrains_months(data, archives=(), hold_back_month=False):
    """The months to train on ([Month], oldest first): the public Bitbrains months (folders
    YYYY-M under bitbrains-rnd/) and the month folders of every agent demand archive given
    (`[forecast] archive_dir` on each host, gathered here); all of them, or all but the
    newest."""
    root = os.path.join(data, "bitbrains-rnd")
    if not os.path.isdir(root):
        sys.exit(f"no Bitbrains traces: {root} is not a folder (give --data)")
    months = [Month(name, folder, False) for name, folder in traces.month_folders(root)]
    for archive in archives:
        if not os.path.isdir(archive):
            sys.exit(f"--archive {archive}: not a folder")
        found = [Month(name, folder, True) for name, folder in traces.month_folders(archive)]
        if not found:
            sys.exit(f"--archive {archive}: no month folder (YYYY-M) in it")
        months += found
    months.sort(key=lambda m: traces.month_key(m.name))
    if hold_back_month:
        months = months[:-1]
    if not months:
        sys.exit(f"no Bitbrains month to train on under {root}" + (" (--hold-back-month needs two)" if hold_back_month else ""))
    return months


def evaluation_month(months):
    """The month train.py's own check is made on: the newest public one trained on (an
    archive's months are for training; `presagectl forecast-eval` measures on them)."""
    public = [m for m in months if not m.archive]
    if not public:
        sys.exit("no public Bitbrains month left to evaluate on")
    return public[-1]


def bitbrains(months, held_out, target, t_from, t_to, stride, only=None):
    """Examples from `months` ([Month]), of the month `only` when given. Public months: the VMs
    held out (or the others), from steps [t_from, t_to); a VM's place in the split is its
    position in the names of all public months. Archive months are all training: every VM,
    every step (they are measured as whole months never seen, with --hold-back-month and
    `presagectl forecast-eval`)."""
    per_month = [(m, traces.bitbrains_month(m.folder)) for m in months]
    names = sorted({name for m, vms in per_month if not m.archive for name in vms})
    held = {name for i, name in enumerate(names) if i % 5 == 0}
    jobs = []
    for m, vms in per_month:
        if only is not None and m != only or m.archive and held_out:
            continue
        for name, (start, cpu, mem) in sorted(vms.items()):
            if not m.archive and (name in held) != held_out:
                continue
            x = cpu if target == "cpu" else mem
            if x is None:
                continue
            jobs.append((x, start, 0, len(x), stride) if m.archive else (x, start, t_from, t_to if t_to else len(x), stride))
    return datasets(jobs)


def pinball(y, q):
    """Mean pinball over the three quantiles; y (..., 12), q (..., 12, 3)."""
    d = y[..., None] - q
    return np.mean(np.maximum(QUANTILES * d, (QUANTILES - 1) * d))


class Mlp:
    """N_FEATURES -> hidden -> hidden -> 36, ReLU; outputs per horizon: the median's offset and two
    log half-widths. Inputs are standardised by the training set's mean and deviation; the export
    folds that into the first layer, so the ONNX model takes the raw features."""

    def __init__(self, sizes, seed):
        rng = np.random.default_rng(seed)
        self.mu = np.zeros(sizes[0], dtype=np.float32)
        self.sd = np.ones(sizes[0], dtype=np.float32)
        self.W = [rng.normal(0, np.sqrt(2.0 / a), (a, b)).astype(np.float32) for a, b in zip(sizes[:-1], sizes[1:])]
        self.b = [np.zeros(b, dtype=np.float32) for b in sizes[1:]]
        self.b[-1].reshape(F.HORIZONS, 3)[:, 1:] = np.log(0.05)
        self.W[-1] *= 0.1

    def standardise_on(self, X):
        self.mu = X.mean(axis=0).astype(np.float32)
        self.sd = np.maximum(X.std(axis=0), 1e-3).astype(np.float32)

    def folded(self):
        """(weights, biases) of the same network taking the raw features."""
        W = [w.copy() for w in self.W]
        b = [v.copy() for v in self.b]
        W[0] = (self.W[0] / self.sd[:, None]).astype(np.float32)
        b[0] = (self.b[0] - (self.mu / self.sd) @ self.W[0]).astype(np.float32)
        return W, b

    def forward(self, X):
        X = (X - self.mu) / self.sd
        acts = [X]
        h = X
        for i, (W, b) in enumerate(zip(self.W, self.b)):
            h = h @ W + b
            if i < len(self.W) - 1:
                h = np.maximum(h, 0.0)
            acts.append(h)
        return acts

    def train(self, X, Y, epochs, batch, lr, seed, hweights=None, wd=0.0):
        self.standardise_on(X[:: max(1, len(X) // 200000)])
        rng = np.random.default_rng(seed)
        m = [np.zeros_like(p) for p in self.W + self.b]
        v = [np.zeros_like(p) for p in self.W + self.b]
        step = 0
        for epoch in range(epochs):
            order = rng.permutation(len(X))
            t0 = time.time()
            total = 0.0
            for s in range(0, len(X), batch):
                idx = order[s:s + batch]
                acts = self.forward(X[idx])
                raw = acts[-1].reshape(-1, F.HORIZONS, 3)
                y = Y[idx]
                ea, eb = np.exp(raw[..., 1]), np.exp(raw[..., 2])
                mid = raw[..., 0] + X[idx, F.BASE_FEATURE:F.BASE_FEATURE + 1]
                q = np.stack([mid - ea, mid, mid + eb], axis=-1)
                d = y[..., None] - q
                total += float(np.sum(np.maximum(QUANTILES * d, (QUANTILES - 1) * d)))
                g = np.where(d > 0, -QUANTILES, 1.0 - QUANTILES) / (len(idx) * F.HORIZONS * 3)
                if hweights is not None:
                    g = g * hweights[None, :, None]
                graw = np.empty_like(raw)
                graw[..., 0] = g[..., 0] + g[..., 1] + g[..., 2]
                graw[..., 1] = -g[..., 0] * ea
                graw[..., 2] = g[..., 2] * eb
                grad = graw.reshape(len(idx), -1)
                gW, gb = [], []
                for i in range(len(self.W) - 1, -1, -1):
                    gW.insert(0, acts[i].T @ grad)
                    gb.insert(0, grad.sum(axis=0))
                    if i > 0:
                        grad = (grad @ self.W[i].T) * (acts[i] > 0)
                step += 1
                rate = lr * (0.5 ** (epoch // 3))
                for k, (p, gp) in enumerate(zip(self.W + self.b, gW + gb)):
                    m[k] = 0.9 * m[k] + 0.1 * gp
                    v[k] = 0.999 * v[k] + 0.001 * gp * gp
                    mh = m[k] / (1 - 0.9 ** step)
                    vh = v[k] / (1 - 0.999 ** step)
                    p -= rate * mh / (np.sqrt(vh) + 1e-8)
                    if wd and k < len(self.W):
                        p -= rate * wd * p
            print(f"  epoch {epoch + 1}: train pinball {total / (len(X) * F.HORIZONS * 3):.5f} ({time.time() - t0:.1f} s)", flush=True)

    def predict(self, X):
        return F.quantiles_from_raw(self.forward(X)[-1], X)


def merge(models):
    """One MLP that computes the mean of `models`' raw outputs (same layer sizes each): the first
    layers side by side, the hidden ones block-diagonal, the last ones stacked and divided by
    their number. The result has the same inputs, outputs and ONNX form as a single model."""
    k = len(models)
    if k == 1:
        return models[0]
    out = Mlp.__new__(Mlp)
    out.W, out.b = [], []
    out.mu = np.zeros_like(models[0].mu)
    out.sd = np.ones_like(models[0].sd)
    folded = [m.folded() for m in models]
    layers = len(models[0].W)
    for i in range(layers):
        Ws = [f[0][i] for f in folded]
        bs = [f[1][i] for f in folded]
        if i == 0:
            W = np.concatenate(Ws, axis=1)
            b = np.concatenate(bs)
        elif i < layers - 1:
            a, c = Ws[0].shape
            W = np.zeros((a * k, c * k), dtype=np.float32)
            for j, Wj in enumerate(Ws):
                W[j * a:(j + 1) * a, j * c:(j + 1) * c] = Wj
            b = np.concatenate(bs)
        else:
            W = np.concatenate(Ws, axis=0) / k
            b = np.mean(bs, axis=0)
        out.W.append(W.astype(np.float32))
        out.b.append(b.astype(np.float32))
    return out


def export_onnx(model, path, name):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    cur = "features"
    Ws, bs = model.folded()
    for i, (W, b) in enumerate(zip(Ws, bs)):
        inits += [numpy_helper.from_array(W, f"W{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("MatMul", [cur, f"W{i}"], [f"mm{i}"]))
        out = "raw" if i == len(Ws) - 1 else f"z{i}"
        nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}"], [out]))
        if i < len(Ws) - 1:
            nodes.append(helper.make_node("Relu", [out], [f"h{i}"]))
            cur = f"h{i}"
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", F.N_FEATURES])],
        [helper.make_tensor_value_info("raw", TensorProto.FLOAT, ["batch", F.HORIZONS * 3])],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="presage-models")
    m.metadata_props.add(key="presage.features", value=F.VERSION)
    m.metadata_props.add(key="presage.outputs", value="per horizon 1..12: p50 - feature 60, ln(p50 - p10), ln(p90 - p50)")
    onnx.checker.check_model(m)
    onnx.save(m, path)


def lightgbm_h6(Xtr, Ytr, Xev, Yev):
    """Quantile gradient-boosted trees at the 30-minute horizon only, for the family choice."""
    import lightgbm as lgb

    preds = []
    for tau in QUANTILES:
        params = {"objective": "quantile", "alpha": float(tau), "learning_rate": 0.05, "num_leaves": 31, "verbose": -1, "seed": 0}
        booster = lgb.train(params, lgb.Dataset(Xtr, Ytr[:, 5]), num_boost_round=200)
        preds.append(booster.predict(Xev))
    q = np.sort(np.clip(np.stack(preds, axis=-1), 0, 1), axis=-1)
    d = Yev[:, 5:6] - q
    return float(np.mean(np.maximum(QUANTILES * d, (QUANTILES - 1) * d)))


def rolling_h6(X, Y, window):
    """Rolling empirical quantiles of the last `window` samples (<= 24, from the features)."""
    w = X[:, F.WINDOW - window:F.WINDOW]
    q = np.quantile(w, QUANTILES, axis=1).T
    d = Y[:, 5:6] - q
    return float(np.mean(np.maximum(QUANTILES * d, (QUANTILES - 1) * d)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../../shared/data")
    ap.add_argument("--out", default=".")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=64, help="width of the two hidden layers")
    ap.add_argument("--pl-stride", type=int, default=2, help="PlanetLab training: one example every N steps")
    ap.add_argument("--bb-stride", type=int, default=1, help="Bitbrains training: one example every N steps")
    ap.add_argument("--skip-memory", action="store_true", help="train the CPU model only")
    ap.add_argument("--skip-hgb", action="store_true", help="do not train the HistGradientBoosting baseline")
    ap.add_argument("--compare-gbt", action="store_true", help="also fit quantile GBTs at 30 min (model family choice)")
    ap.add_argument("--cpu-data", choices=["both", "planetlab", "bitbrains"], default="both",
                    help="what the CPU model is trained on (one model for both, or one per trace family)")
    ap.add_argument("--cpu-name", default=f"cpu-quantiles-{F.VERSION}", help="file stem of the CPU model")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cache", default=None, help="folder to keep the built datasets in (rebuilding takes minutes)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--h6-weight", type=float, default=1.0, help="weight of the 30-minute horizon in the loss (others 1)")
    ap.add_argument("--wd", type=float, default=0.0, help="decoupled weight decay of the weights")
    ap.add_argument("--ensemble", type=int, default=1, help="train this many models (seeds) and export their mean as one")
    ap.add_argument("--archive", action="append", default=[],
                    help="an agent demand archive (its YYYY-M month folders) to train on as well (repeatable)")
    ap.add_argument("--hold-back-month", action="store_true",
                    help="leave the newest Bitbrains month out of training (to measure the models on a month never seen)")
    args = ap.parse_args()
    args.months = bitbrains_months(args.data, args.archive, args.hold_back_month)
    args.eval_month = evaluation_month(args.months)
    labels = [m.label for m in args.months]
    args.months_tag = "+".join(labels) if not args.archive else hashlib.sha256("\n".join(labels).encode()).hexdigest()[:12]
    print(f"Bitbrains months trained on: {', '.join(labels)}; evaluated on {args.eval_month.label}", flush=True)
    np.random.seed(0)

    eval_names = set()
    for d in PL_EVAL:
        eval_names.update(os.listdir(os.path.join(args.data, "planetlab", d)))
    cache = args.cache and os.path.join(args.cache, f"cpu-{F.VERSION}-pl{args.pl_stride}-bb{args.bb_stride}-{args.months_tag}.npz")
    if cache and os.path.exists(cache):
        print(f"loading datasets from {cache}", flush=True)
        z = np.load(cache)
        pl_tr, pl_ev, bb_tr, bb_ev = [(z[f"{k}_X"], z[f"{k}_Y"]) for k in ("pl_tr", "pl_ev", "bb_tr", "bb_ev")]
    else:
        print("building datasets", flush=True)
        pl_tr = planetlab(args.data, PL_TRAIN, exclude=eval_names, stride=args.pl_stride)
        pl_ev = planetlab(args.data, PL_EVAL, stride=6)
        bb_tr = bitbrains(args.months, False, "cpu", 0, BB_SPLIT_STEP, args.bb_stride)
        bb_ev = bitbrains(args.months, True, "cpu", BB_SPLIT_STEP, None, 6, only=args.eval_month)
        if cache:
            os.makedirs(args.cache, exist_ok=True)
            np.savez(cache, **{f"{k}_{p}": v[i] for k, v in (("pl_tr", pl_tr), ("pl_ev", pl_ev), ("bb_tr", bb_tr), ("bb_ev", bb_ev)) for i, p in enumerate("XY")})
    print(f"  planetlab train {len(pl_tr[0])}, eval {len(pl_ev[0])}; bitbrains train {len(bb_tr[0])}, eval {len(bb_ev[0])}")

    parts = {"both": [pl_tr, bb_tr], "planetlab": [pl_tr], "bitbrains": [bb_tr]}[args.cpu_data]
    Xtr = np.concatenate([p[0] for p in parts])
    Ytr = np.concatenate([p[1] for p in parts])
    print(f"training the CPU model on {args.cpu_data} ({len(Xtr)} examples)", flush=True)
    members = []
    for e in range(args.ensemble):
        seed = args.seed + 10 * e
        m = Mlp([F.N_FEATURES, args.hidden, args.hidden, F.HORIZONS * 3], seed=seed)
        hw = np.ones(F.HORIZONS, dtype=np.float32)
        hw[5] = args.h6_weight
        m.train(Xtr, Ytr, epochs=args.epochs, batch=2048, lr=args.lr, seed=seed + 1, hweights=hw / hw.mean(), wd=args.wd)
        members.append(m)
    cpu = merge(members)
    for name, (X, Y) in [("planetlab", pl_ev), ("bitbrains", bb_ev)]:
        q = cpu.predict(X)
        d = Y[:, 5:6] - q[:, 5, :]
        mlp6 = float(np.mean(np.maximum(QUANTILES * d, (QUANTILES - 1) * d)))
        roll = min(rolling_h6(X, Y, w) for w in (12, 24))
        print(f"  {name} 30 min: mlp {mlp6:.5f}, best rolling quantiles (1-2 h) {roll:.5f}, ratio {mlp6 / roll:.3f}")
        if args.compare_gbt:
            gbt = lightgbm_h6(Xtr[::4], Ytr[::4], X, Y)
            print(f"  {name} 30 min: quantile GBT {gbt:.5f}, ratio {gbt / roll:.3f}")

    if not args.skip_hgb:
        os.makedirs(os.path.join(args.out, "fixtures"), exist_ok=True)
        hgb_point(Xtr, Ytr, os.path.join(args.out, "hgb-point.json"), os.path.join(args.out, "fixtures", "hgb-parity.json"))

    models = [(cpu, args.cpu_name)]
    if not args.skip_memory:
        models.append((train_memory(args), f"memory-quantiles-{F.VERSION}"))
    os.makedirs(args.out, exist_ok=True)
    for model, name in models:
        path = os.path.join(args.out, f"{name}.onnx")
        export_onnx(model, path, f"presage-{name}")
        print(f"wrote {path} ({os.path.getsize(path)} bytes, sha256 {hashlib.sha256(open(path, 'rb').read()).hexdigest()[:16]})")


HGB_INPUTS = F.WINDOW + 4 + 1


def hgb_rows(X, Y, rng, n):
    """n random (forecast time, horizon) pairs: the last 24 samples, time of day and day of week
    (sin, cos), the horizon in steps; target the value that many steps ahead."""
    i = rng.integers(0, len(X), n)
    h = rng.integers(1, F.HORIZONS + 1, n)
    inputs = np.concatenate([X[i, :F.WINDOW], X[i, 52:56], h[:, None].astype(np.float32)], axis=1)
    return inputs.astype(np.float32), Y[i, h - 1]


def hgb_point(X, Y, json_path, fixture_path):
    """The OpenNebula-style baseline: a HistGradientBoosting point forecaster on recent samples
    and the calendar (one model, the horizon an input). Written as JSON trees that
    `forecast/src/baselines.rs` evaluates; its intervals come from its own recent errors there."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    rng = np.random.default_rng(5)
    Xh, yh = hgb_rows(X, Y, rng, 400_000)
    t0 = time.time()
    est = HistGradientBoostingRegressor(max_iter=60, max_depth=5, learning_rate=0.1, random_state=0).fit(Xh, yh)
    print(f"  hgb: {len(est._predictors)} trees in {time.time() - t0:.1f} s", flush=True)
    trees = []
    for (pred,) in est._predictors:
        n = pred.nodes
        trees.append({
            "feature": n["feature_idx"].astype(int).tolist(),
            "threshold": [float(v) for v in n["num_threshold"]],
            "left": n["left"].astype(int).tolist(),
            "right": n["right"].astype(int).tolist(),
            "leaf": n["is_leaf"].astype(bool).tolist(),
            "value": [float(v) for v in n["value"]],
        })
    model = {"format": "presage-hgb-point-v1", "inputs": HGB_INPUTS, "baseline": float(np.ravel(est._baseline_prediction)[0]), "trees": trees}
    with open(json_path, "w") as f:
        json.dump(model, f, separators=(",", ":"))
    Xf, _ = hgb_rows(X, Y, np.random.default_rng(6), 20)
    with open(fixture_path, "w") as f:
        json.dump({"inputs": Xf.tolist(), "predictions": est.predict(Xf).tolist()}, f)
    print(f"wrote {json_path} ({os.path.getsize(json_path)} bytes) and {fixture_path}")


def train_memory(args):
    print("training the memory model", flush=True)
    cache = args.cache and os.path.join(args.cache, f"memory-{F.VERSION}-bb{args.bb_stride}-{args.months_tag}.npz")
    if cache and os.path.exists(cache):
        z = np.load(cache)
        mtr, mev = (z["tr_X"], z["tr_Y"]), (z["ev_X"], z["ev_Y"])
    else:
        mtr = bitbrains(args.months, False, "memory", 0, BB_SPLIT_STEP, args.bb_stride)
        mev = bitbrains(args.months, True, "memory", BB_SPLIT_STEP, None, 6, only=args.eval_month)
        if cache:
            os.makedirs(args.cache, exist_ok=True)
            np.savez(cache, tr_X=mtr[0], tr_Y=mtr[1], ev_X=mev[0], ev_Y=mev[1])
    mem = Mlp([F.N_FEATURES, args.hidden, args.hidden, F.HORIZONS * 3], seed=3)
    mem.train(mtr[0], mtr[1], epochs=args.epochs, batch=2048, lr=2e-3, seed=4)
    q = mem.predict(mev[0])
    d = mev[1][:, 5:6] - q[:, 5, :]
    print(f"  memory 30 min: mlp {float(np.mean(np.maximum(QUANTILES * d, (QUANTILES - 1) * d))):.5f}, "
          f"best rolling {min(rolling_h6(mev[0], mev[1], w) for w in (12, 24)):.5f}")
    return mem


if __name__ == "__main__":
    main()
