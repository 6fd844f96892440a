"""How much better than the 3-hour rolling quantiles a forecaster could be on the PlanetLab
evaluation days, measured with two oracles that see the future (for the model card):

    python planetlab_bound.py --data ../../shared/data

For every VM and every forecast time t >= 36, target x[t + 5] (30 minutes ahead), pinball loss of
  - the rolling quantiles of x[t-36:t] (the best baseline),
  - the quantiles of the whole day, future included,
  - the quantiles of the 36 samples around the target, x[t+5-18 : t+5+18] (knows the local
    distribution of the future, not the value),
each relative to the first.
"""

import argparse
import os

import numpy as np

from presage_models import traces

Q = np.array([0.1, 0.5, 0.9])


def pinball(y, q):
    d = y[:, None] - q
    return np.maximum(Q * d, (Q - 1) * d).mean(axis=1).sum()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../../shared/data")
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


if __name__ == "__main__":
    main()
