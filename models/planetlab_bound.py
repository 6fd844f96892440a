"""How much better than the 3-hour rolling quantiles a forecaster could be on the PlanetLab
evaluation days, measured with two oracles that see the future (for the model card):

    python planetlab_bound.py --data ../../shared/data [--in-sample]

For every VM and every forecast time t >= 36, target x[t + 5] (30 minutes ahead), pinball loss of
  - the rolling quantiles of x[t-36:t] (the best baseline),
  - the quantiles of the whole day, future included,
  - the quantiles of the 36 samples around the target, x[t+5-18 : t+5+18] (knows the local
    distribution of the future, not the value),
each relative to the first.

It also asks whether VMs on the same PlanetLab node (a trace file's name is node, then slice)
say anything about each other: the mean correlation between a VM's 30-minute residual
x[t + 5] - median(x[t-36:t]) and, known at t, its own last deviation x[t-1] - median(x[t-36:t])
or the mean last deviation of the other VMs on its node (what an agent sees of its host).

With --in-sample it also trains presage's network (train.py's Mlp, the v2 features, 256 wide
instead of 64, 24 epochs) on the evaluation days themselves and scores it on the same forecasts
it was fitted to: what this feature vector can express at best, not a forecaster (~1 min).
"""

import argparse
import os

import numpy as np

from presage_models import features as F
from presage_models import traces

Q = np.array([0.1, 0.5, 0.9])


def pinball(y, q):
    d = y[:, None] - q
    return np.maximum(Q * d, (Q - 1) * d).mean(axis=1).sum()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../../shared/data")
    ap.add_argument("--in-sample", action="store_true", help="also fit the network to the evaluation days")
    args = ap.parse_args()
    for day in ("20110322", "20110325"):
        rolling = whole_day = local = 0.0
        for x in traces.planetlab_day(os.path.join(args.data, "planetlab", day)).values():
            x = np.asarray(x)
            ts = np.arange(36, len(x) - 5)
            y = x[ts + 5]
            rolling += pinball(y, np.array([np.quantile(x[t - 36:t], Q) for t in ts]))
            whole_day += pinball(y, np.tile(np.quantile(x, Q), (len(ts), 1)))
            local += pinball(y, np.array([np.quantile(x[max(0, t - 13):t + 23], Q) for t in ts]))
        print(f"{day}: whole-day oracle {whole_day / rolling:.3f}, local-distribution oracle {local / rolling:.3f} "
              "(x the 3-hour rolling quantiles)")
        co_located(traces.planetlab_day(os.path.join(args.data, "planetlab", day)), day)
    if args.in_sample:
        in_sample(args.data)


def node_of(name):
    """The node part of a PlanetLab file name: all but the slice (`site_slice`, or `root`)."""
    parts = name.split("_")
    return "_".join(parts[:-1] if parts[-1] == "root" else parts[:-2])


def co_located(day_series, day):
    ts = np.arange(36, 283)
    residual, deviation, nodes = {}, {}, {}
    for name, x in day_series.items():
        x = np.asarray(x)
        med = np.array([np.median(x[t - 36:t]) for t in ts])
        residual[name], deviation[name] = x[ts + 5] - med, x[ts - 1] - med
        nodes.setdefault(node_of(name), []).append(name)
    own, others = [], []
    for names in nodes.values():
        for n in names if len(names) > 1 else []:
            node = np.mean([deviation[m] for m in names if m != n], axis=0)
            if min(residual[n].std(), deviation[n].std(), node.std()) > 0:
                own.append(np.corrcoef(residual[n], deviation[n])[0, 1])
                others.append(np.corrcoef(residual[n], node)[0, 1])
    print(f"{day}: {len(nodes)} nodes; residual vs own last deviation r = {np.mean(own):.3f}, "
          f"vs the node's other VMs' r = {np.mean(others):.3f} ({len(own)} VMs sharing a node)")


def in_sample(data):
    import train

    X, Y = train.planetlab(data, train.PL_EVAL, stride=6)
    m = train.Mlp([F.N_FEATURES, 256, 256, F.HORIZONS * 3], seed=1)
    m.train(X, Y, epochs=24, batch=512, lr=2e-3, seed=2)
    y = Y[:, 5]
    fitted = pinball(y, m.predict(X)[:, 5, :])
    rolling = pinball(y, X[:, 59:62])  # features 59-61: p10, p50, p90 of the last 36 samples
    print(f"both days, every 6th step: network fitted to them {fitted / rolling:.3f} (x the 3-hour rolling quantiles)")


if __name__ == "__main__":
    main()
