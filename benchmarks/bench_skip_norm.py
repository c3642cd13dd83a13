"""A residual ``Add`` + RMS norm as onnxruntime's fused ``SkipSimplifiedLayerNormalization``.

``python -m benchmarks.bench_skip_norm`` times a chain of 48 residual adds and norms (a
24-layer decoder's two per layer, qwen2's hidden size 896) as the loaders emit them —
``Add`` then ``SimplifiedLayerNormalization``, which onnxruntime does not fuse in these
graphs — against the same chain as ``com.microsoft.SkipSimplifiedLayerNormalization``
nodes (the sum as its fourth output), at 1 and 128 rows, 1 and 2 threads, both sessions
interleaved, medians of 9 rounds of 100 runs. The largest difference between the two
chains' outputs is reported too (the fused kernel rounds differently).

JSON in ``benchmarks/results/skip_norm.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnx import GraphProto, TensorProto, helper, numpy_helper

from benchmarks.common import cpu_session, interleaved_us

RESULTS = Path(__file__).parent / "results"
HIDDEN = 896
NORMS = 48


def _chain(fused: bool) -> GraphProto:
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.random(HIDDEN, np.float32), "w")
    nodes = []
    hidden = "x"
    for i in range(NORMS):
        skip = f"n{i - 1}" if i else "r"
        if fused:
            nodes.append(
                helper.make_node(
                    "SkipSimplifiedLayerNormalization",
                    [skip, hidden, "w"],
                    [f"n{i}", "", "", f"h{i}"],
                    domain="com.microsoft",
                    epsilon=1e-6,
                )
            )
        else:
            nodes.append(helper.make_node("Add", [skip, hidden], [f"h{i}"]))
            nodes.append(
                helper.make_node(
                    "SimplifiedLayerNormalization", [f"h{i}", "w"], [f"n{i}"], axis=-1, epsilon=1e-6
                )
            )
        hidden = f"h{i}"
    rows: list[str | int | None] = ["s", HIDDEN]
    graph = helper.make_graph(
        nodes,
        "norms",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, rows) for n in ("x", "r")],
        [
            helper.make_tensor_value_info(f"n{NORMS - 1}", TensorProto.FLOAT, rows),
            helper.make_tensor_value_info(hidden, TensorProto.FLOAT, rows),
        ],
        [weight],
    )
    return graph


def measure(threads: int, rows: int) -> dict[str, Any]:
    """Microseconds per chain (median of 9 interleaved rounds) and the outputs' difference."""
    sessions = {fused: cpu_session(_chain(fused), threads) for fused in (False, True)}
    rng = np.random.default_rng(1)
    feeds = {n: rng.random((rows, HIDDEN), np.float32) * 0.1 for n in ("x", "r")}
    us = interleaved_us(
        {"separate": (sessions[False], feeds), "fused": (sessions[True], feeds)},
        rounds=9,
        calls=100,
    )
    plain, fused_out = (sessions[f].run(None, feeds)[0] for f in (False, True))
    separate, fused_us = us["separate"], us["fused"]
    return {
        "threads": threads,
        "rows": rows,
        "separate_us": separate,
        "fused_us": fused_us,
        "fused_over_separate": fused_us / separate,
        "max_abs_difference": float(np.abs(plain - fused_out).max()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RESULTS / "skip_norm.json"))
    args = parser.parse_args()
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "onnxruntime": ort.__version__,
        "norms": NORMS,
        "hidden": HIDDEN,
        "runs": [measure(t, r) for t in (1, 2) for r in (1, 128)],
    }
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
