"""Writes the parity fixtures the Rust tests check tract against (fixtures/parity.json): series,
the features Python computes for them, and onnxruntime's outputs for the committed models. Also
a model with the wrong input width (fixtures/wrong-input.onnx) and one trained on another feature
vector (fixtures/old-features.onnx) for the error-path tests.

    python fixtures.py
"""

import json
import math

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from presage_models import features as F


def series():
    rng = np.random.default_rng(42)
    n = 2100
    t = np.arange(n)
    daily = 0.4 + 0.25 * np.sin(2 * math.pi * t / F.DAY) + rng.normal(0, 0.05, n)
    walk = np.clip(0.3 + np.cumsum(rng.normal(0, 0.02, n)), 0, 1)
    return {
        "daily": np.clip(daily, 0, 1).astype(np.float32),
        "walk": walk.astype(np.float32),
        "zeros": np.zeros(300, dtype=np.float32),
        "ramp": (np.arange(100) / 100.0).astype(np.float32),
    }


def main():
    cases = []
    sessions = {name: ort.InferenceSession(f"{name}-quantiles-{F.VERSION}.onnx") for name in ("cpu", "memory")}
    for sname, x in series().items():
        for t in (F.WINDOW, 80, 299, 2016, 2100):
            if t > len(x):
                continue
            next_time_s = 1372629804 + t * F.STEP_S if sname != "ramp" else t * F.STEP_S
            f = F.features(x, t, next_time_s)
            case = {"series": sname, "history": x[:t].tolist(), "next_time_s": next_time_s, "features": f.tolist(), "models": {}}
            for mname, sess in sessions.items():
                raw = sess.run(None, {"features": f[None, :]})[0][0]
                q = F.quantiles_from_raw(raw[None, :], f[None, :])[0]
                case["models"][mname] = {"raw": raw.tolist(), "quantiles": q.reshape(-1).tolist()}
            cases.append(case)
    with open("fixtures/parity.json", "w") as out:
        json.dump({"features": F.VERSION, "cases": cases}, out)
    print(f"wrote fixtures/parity.json ({len(cases)} cases)")

    w = numpy_helper.from_array(np.zeros((10, F.HORIZONS * 3), dtype=np.float32), "W")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["features", "W"], ["raw"])],
        "wrong-input",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 10])],
        [helper.make_tensor_value_info("raw", TensorProto.FLOAT, ["batch", F.HORIZONS * 3])],
        [w],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), "fixtures/wrong-input.onnx")
    print("wrote fixtures/wrong-input.onnx")

    # The right shapes, trained on another feature vector (as the v1 models were).
    w = numpy_helper.from_array(np.zeros((F.N_FEATURES, F.HORIZONS * 3), dtype=np.float32), "W")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["features", "W"], ["raw"])],
        "old-features",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", F.N_FEATURES])],
        [helper.make_tensor_value_info("raw", TensorProto.FLOAT, ["batch", F.HORIZONS * 3])],
        [w],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.metadata_props.add(key="presage.features", value="v1")
    onnx.save(m, "fixtures/old-features.onnx")
    print("wrote fixtures/old-features.onnx")


if __name__ == "__main__":
    main()
