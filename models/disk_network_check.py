"""Would disk and network models pay off? (the model card's answer; ~2 min on 2 cores)

    python disk_network_check.py --data ../../shared/data

Bitbrains only (PlanetLab records CPU alone), the model card's split: every fifth VM held out,
trained on the others' first three weeks, evaluated on the held-out VMs' last week at 30
minutes. Disk is read + write, network received + transmitted, in KB/s. Throughput spans six
orders of magnitude, so the series are forecast on a log scale, u = ln(1 + KB/s) / ln(1 + 1e7)
(0..1 as the v2 features expect), with presage's network (train.py's Mlp, v2 features, the CPU
model's size, 6 epochs). Prints pinball loss on that scale and, the quantiles mapped back, in
KB/s, against the rolling empirical quantiles of the last 1, 2 and 3 hours, and the model's
p10-p90 coverage.
"""

import argparse
import gzip
import os

import numpy as np

import train
from presage_models import features as F

LOG_SCALE = np.log1p(1e7)


def throughput(folder):
    """{vm: (start epoch s, disk KB/s, network KB/s)}"""
    out = {}
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".csv.gz"):
            continue
        with gzip.open(os.path.join(folder, name), "rt") as f:
            rows = [[float(x) for x in line.split(";")] for i, line in enumerate(f) if line.strip() and not (i == 0 and line.startswith("Timestamp"))]
        a = np.array(rows)
        out[name] = (int(a[0, 0]), a[:, 7] + a[:, 8], a[:, 9] + a[:, 10])
    return out


def pinball(y, q):
    d = y[:, None] - q
    return float(np.mean(np.maximum(train.QUANTILES * d, (train.QUANTILES - 1) * d)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../../shared/data")
    args = ap.parse_args()
    vms = throughput(os.path.join(args.data, "bitbrains-rnd", "2013-7"))
    for column, what in ((1, "disk"), (2, "network")):
        train_jobs, eval_jobs = [], []
        for i, (_, v) in enumerate(sorted(vms.items())):
            u = np.clip(np.log1p(np.maximum(v[column], 0.0)) / LOG_SCALE, 0.0, 1.0).astype(np.float32)
            if i % 5 == 0:
                eval_jobs.append((u, v[0], train.BB_SPLIT_STEP, len(u), 6))
            else:
                train_jobs.append((u, v[0], 0, train.BB_SPLIT_STEP, 2))
        Xtr, Ytr = train.datasets(train_jobs)
        X, Y = train.datasets(eval_jobs)
        model = train.Mlp([F.N_FEATURES, 64, 64, F.HORIZONS * 3], seed=1)
        model.train(Xtr, Ytr, epochs=6, batch=2048, lr=2e-3, seed=2)
        methods = {
            "model": model.predict(X)[:, 5, :],
            "rolling 1 h": np.quantile(X[:, F.WINDOW - 12:F.WINDOW], train.QUANTILES, axis=1).T,
            "rolling 2 h": np.quantile(X[:, :F.WINDOW], train.QUANTILES, axis=1).T,
            "rolling 3 h": X[:, 59:62],  # features 59-61: p10, p50, p90 of the last 36 samples
        }
        y = Y[:, 5]
        kbps = lambda u: np.expm1(u * LOG_SCALE)  # noqa: E731
        log_loss = {k: pinball(y, q) for k, q in methods.items()}
        kbps_loss = {k: pinball(kbps(y), kbps(q)) for k, q in methods.items()}
        best_log = min(v for k, v in log_loss.items() if k != "model")
        best_kbps = min(v for k, v in kbps_loss.items() if k != "model")
        q = methods["model"]
        coverage = float(np.mean((y >= q[:, 0]) & (y <= q[:, 2])))
        print(f"{what}: {len(Xtr)} training examples, {len(X)} evaluated")
        for k in methods:
            print(f"  {k:<12} pinball {log_loss[k]:.5f} (log scale)  {kbps_loss[k]:9.2f} KB/s")
        print(f"  model / best baseline: {log_loss['model'] / best_log:.3f} on the log scale, "
              f"{kbps_loss['model'] / best_kbps:.3f} in KB/s; coverage {100 * coverage:.1f} %", flush=True)


if __name__ == "__main__":
    main()
