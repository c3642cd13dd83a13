"""A float16 KV cache against float32: ``GroupQueryAttention`` alone, the demo models' shapes.

``python -m benchmarks.bench_kv_dtype`` times one ``GroupQueryAttention`` node (rotary off)
on onnxruntime's CPU provider with its cache in float32, as the loaders build it, and in
float16, as the issue asked to try: there the node runs in float16, so the float32
``q``/``k``/``v`` are cast in and the output cast back (the casts are counted). Decode
steps (one token after ``past`` cached positions) and a 128-token prefill, both sessions
interleaved, medians of 7 rounds. The cache is what halves: its bytes per position are
listed (a zero-filled cache commits memory only where positions are written, so at short
contexts neither shows in peak memory).

JSON in ``benchmarks/results/kv_dtype.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from benchmarks.common import cpu_session, interleaved_us

RESULTS = Path(__file__).parent / "results"

#: name -> (query heads, KV heads, head dim, layers), from the demo models' GGUF metadata
SHAPES = {
    "qwen2.5-coder-0.5b": (14, 2, 64, 24),
    "gemma3-270m": (4, 1, 256, 18),
}


def _session(heads: int, kv_heads: int, dim: int, half: bool, threads: int) -> Any:
    f32, f16 = TensorProto.FLOAT, TensorProto.FLOAT16
    cache = f16 if half else f32
    names = ["q", "k", "v"]
    nodes = []
    if half:
        nodes += [helper.make_node("Cast", [n], [n + "16"], to=f16) for n in names]
        names = [n + "16" for n in names]
    out = "o16" if half else "o"
    nodes.append(
        helper.make_node(
            "GroupQueryAttention",
            [*names, "past_k", "past_v", "seqlens_k", "total_len"],
            [out, "present_k", "present_v"],
            domain="com.microsoft",
            num_heads=heads,
            kv_num_heads=kv_heads,
        )
    )
    if half:
        nodes.append(helper.make_node("Cast", ["o16"], ["o"], to=f32))
    widths = {"q": heads * dim, "k": kv_heads * dim, "v": kv_heads * dim}
    inputs = [helper.make_tensor_value_info(n, f32, [1, "s", w]) for n, w in widths.items()]
    inputs += [
        helper.make_tensor_value_info(n, cache, [1, kv_heads, "t", dim])
        for n in ("past_k", "past_v")
    ]
    inputs += [
        helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1]),
        helper.make_tensor_value_info("total_len", TensorProto.INT32, []),
    ]
    outputs = [
        helper.make_tensor_value_info("o", f32, None),
        helper.make_tensor_value_info("present_k", cache, None),
        helper.make_tensor_value_info("present_v", cache, None),
    ]
    return cpu_session(helper.make_graph(nodes, "gqa", inputs, outputs), threads)


def _feeds(
    heads: int, kv_heads: int, dim: int, new: int, past: int, half: bool
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    cache = np.float16 if half else np.float32
    size = past + new + 64  # the buffer holds more positions than are used, as a slot does
    return {
        "q": rng.standard_normal((1, new, heads * dim), np.float32),
        "k": rng.standard_normal((1, new, kv_heads * dim), np.float32),
        "v": rng.standard_normal((1, new, kv_heads * dim), np.float32),
        "past_k": rng.standard_normal((1, kv_heads, size, dim)).astype(cache),
        "past_v": rng.standard_normal((1, kv_heads, size, dim)).astype(cache),
        "seqlens_k": np.array([past + new - 1], np.int32),
        "total_len": np.array(past + new, np.int32),
    }


def measure(model: str, threads: int, new: int, past: int, calls: int) -> dict[str, Any]:
    """Microseconds per call (median of 7 interleaved rounds) for both cache types."""
    heads, kv_heads, dim, layers = SHAPES[model]
    runs = {
        name: (
            _session(heads, kv_heads, dim, half, threads),
            _feeds(heads, kv_heads, dim, new, past, half),
        )
        for name, half in (("float32", False), ("float16", True))
    }
    us = interleaved_us(runs, rounds=7, calls=calls)
    f32, f16 = us["float32"], us["float16"]
    return {
        "new_tokens": new,
        "past": past,
        "float32_us": f32,
        "float16_us": f16,
        "float16_over_float32": f16 / f32,
        "per_step_ms_added": (f16 - f32) * layers / 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RESULTS / "kv_dtype.json"))
    args = parser.parse_args()
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "onnxruntime": ort.__version__,
    }
    for model, (_, kv_heads, dim, layers) in SHAPES.items():
        entry: dict[str, Any] = {
            "cache_bytes_per_position": {
                "float32": 2 * layers * kv_heads * dim * 4,
                "float16": 2 * layers * kv_heads * dim * 2,
            }
        }
        for threads in (1, 2):
            entry[f"threads={threads}"] = [
                measure(model, threads, 1, 200, 300),
                measure(model, threads, 1, 1000, 200),
                measure(model, threads, 128, 0, 10),
            ]
        result[model] = entry
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
