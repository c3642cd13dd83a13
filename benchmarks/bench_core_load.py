"""Load the same fp32 weights three ways, each in a fresh process, side by side.

* ``pullweights``  — weights declared as file references (zero-copy graph inputs);
* ``ort-embedded`` — onnxruntime loading a model with the weights inside the protobuf;
* ``ort-external`` — onnxruntime loading the model with its weights as ONNX external data.

Each run measures time to ready (load + compile + first compute), peak RSS (VmHWM) and
peak private (anonymous) memory above the process's baseline after imports. Runs are
interleaved so machine noise hits every method alike; medians and ratios are reported.

    python -m benchmarks.bench_core_load [--mib 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 4096
METHODS = ("pullweights", "ort-embedded", "ort-external")


def prepare(directory: Path, layers: int) -> None:
    """Write the raw weights file and both ONNX models (embedded and external data)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    raw = directory / "weights.bin"
    inits = []
    with open(raw, "wb") as f:
        for i in range(layers):
            w = (rng.standard_normal((DIM, DIM), dtype=np.float32) / 64).astype(np.float32)
            f.write(w.tobytes())
            inits.append(numpy_helper.from_array(w, f"w{i}"))
    nodes, prev = [], "x"
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"h{i}"]))
        prev = f"h{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["seq", DIM])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["seq", DIM])
    graph = helper.make_graph(nodes, "bench", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.save_model(model, directory / "embedded.onnx")
    onnx.save_model(
        model,
        directory / "external.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="external.bin",
        size_threshold=0,
    )


def child(method: str, directory: Path, layers: int) -> dict[str, float]:
    """Run one load in this process and measure it."""
    import onnxruntime as ort

    import pullweights as pw
    from pullweights.memstats import MemoryMonitor

    xs = np.ones((4, DIM), np.float32)
    mon = MemoryMonitor(interval=0.002)
    base = mon.start
    start = time.perf_counter()
    with mon:
        if method == "pullweights":

            async def run() -> None:
                src = pw.FileSource(directory / "weights.bin")
                b = pw.GraphBuilder(pw.create_context(cache_dir=None))
                h = b.input("x", pw.TensorDescriptor("float32", [pw.Dim("seq", 1, 64), DIM]))
                for i in range(layers):
                    ref = pw.raw_weight(src, i * DIM * DIM * 4, "float32", (DIM, DIM))
                    h = b.relu(b.matmul(h, b.input(f"w{i}", ref.descriptor, weight=ref)))
                graph = await b.build({"y": h})
                await graph.compute({"x": xs})

            asyncio.run(run())
        else:
            name = "embedded.onnx" if method == "ort-embedded" else "external.onnx"
            sess = ort.InferenceSession(str(directory / name), providers=["CPUExecutionProvider"])
            sess.run(None, {"x": xs})
    ready = time.perf_counter() - start
    return {
        "time_to_ready_s": ready,
        "peak_rss_mib": mon.peak_rss / 2**20,
        "peak_private_mib": (mon.peak_anonymous - base.anonymous) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="weight size (multiple of 64)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=METHODS)
    parser.add_argument("--dir", type=Path)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "core_load.json"
    )
    args = parser.parse_args()
    layers = max(1, args.mib // 64)
    if args.child:
        print(json.dumps(child(args.child, args.dir, layers)))
        return
    with tempfile.TemporaryDirectory(prefix="pw-bench-") as tmp:
        directory = Path(tmp)
        prepare(directory, layers)
        runs: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
        for _ in range(args.repeats):
            for method in METHODS:
                cmd = [
                    sys.executable,
                    "-m",
                    "benchmarks.bench_core_load",
                    "--child",
                    method,
                    "--dir",
                    str(directory),
                    "--mib",
                    str(args.mib),
                ]
                out = subprocess.run(
                    cmd,
                    capture_output=True,
                    text=True,
                    check=True,
                    cwd=Path(__file__).parent.parent,
                )
                runs[method].append(json.loads(out.stdout.strip().splitlines()[-1]))
    medians = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in runs.items()}
    base = medians["ort-embedded"]
    print(
        f"\n{layers * 64} MiB fp32 weights, median of {args.repeats} interleaved runs "
        f"({os.cpu_count()} CPUs)\n"
    )
    print(
        "| method | time to ready (s) | peak RSS (MiB) | peak private (MiB) | "
        "private vs ort-embedded |"
    )
    print("|---|---|---|---|---|")
    for method, m in medians.items():
        ratio = m["peak_private_mib"] / base["peak_private_mib"]
        print(
            f"| {method} | {m['time_to_ready_s']:.3f} | {m['peak_rss_mib']:.0f} | "
            f"{m['peak_private_mib']:.1f} | {ratio:.3f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"mib": layers * 64, "runs": runs, "medians": medians}, indent=2)
    )


if __name__ == "__main__":
    main()
