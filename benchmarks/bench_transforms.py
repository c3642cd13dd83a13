"""Throughput and cost of the GGUF layout transforms, per ggml quant type.

For a 2048 x 2048 tensor of each type (random valid blocks) this measures, on one core:

* transform throughput in MB/s of GGUF input (best of ``--reps``), for the chosen layout
  (MatMulNBits repack) and for the dequantize fallback;
* bytes per weight in the GGUF file and after the transform (all parts);
* the layout's exactness: max |dequant(layout) - gguf.quants.dequantize|;
* onnxruntime ``MatMulNBits`` (plus the mins split where used) at M=1 and M=32,
  accuracy_level 4 and 0, one thread, and its error relative to ``max(|X| @ |W|^T)``;
* for formats with a min, the alternatives: requantizing to 8-bit with a uint8 zero point,
  and a float zero point (``zp = min / scale``).

Prints markdown tables and writes ``benchmarks/results/transforms.json``.

    python benchmarks/bench_transforms.py [--types Q4_K,Q8_0] [--reps 7] [--size 2048]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from gguf import GGMLQuantizationType, quants
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pullweights.gguf.layouts import (  # noqa: E402
    FORMATS,
    DequantizeTransform,
    MatMulNBitsTransform,
)
from pullweights.gguf.layouts.matmul_nbits import unpack_codes  # noqa: E402
from tests.gguf_layouts.blockdata import random_blocks  # noqa: E402
from tests.gguf_layouts.ort_graphs import build, matmul_model  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "transforms.json"


def _times(fn: Callable[[], object], reps: int) -> list[float]:
    """Wall times of ``reps`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def best_time(fn: Callable[[], object], reps: int) -> float:
    return min(_times(fn, reps))


def median_time(fn: Callable[[], object], reps: int) -> float:
    return float(np.median(_times(fn, reps)))


def rel_error(y: np.ndarray, x: np.ndarray, w: np.ndarray) -> float:
    ref = x.astype(np.float64) @ w.T.astype(np.float64)
    scale = (np.abs(x).astype(np.float64) @ np.abs(w).T.astype(np.float64)).max()
    return float(np.abs(y - ref).max() / scale)


def ort_figures(
    t: MatMulNBitsTransform, parts: dict[str, np.ndarray], w: np.ndarray
) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    out: dict[str, Any] = {}
    for level in (4, 0):
        model = matmul_model(t, parts, accuracy_level=level)
        for m in (1, 32):
            x = rng.standard_normal((m, t.k)).astype(np.float32)
            reps = 50 if level == 4 else 5
            out[f"acc{level}_m{m}_ms"] = median_time(partial(model, X=x), reps) * 1e3
            out[f"acc{level}_m{m}_err"] = rel_error(model(X=x), x, w)
    return out


def fp32_matmul_ms(n: int, k: int) -> dict[str, float]:
    """Plain float32 MatMul with a constant weight (the dequantize fallback's cost)."""
    w = np.random.default_rng(2).standard_normal((k, n)).astype(np.float32)
    node = helper.make_node("MatMul", ["X", "W"], ["Y"])
    x_info = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["M", k])
    y_info = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", n])
    model = build([node], [x_info], y_info, {"W": w})
    out = {}
    for m in (1, 32):
        x = np.ones((m, k), np.float32)
        out[f"m{m}_ms"] = median_time(partial(model, X=x), 20) * 1e3
    return out


# --- alternatives for formats with a min ---------------------------------------------------


def requant8(w: np.ndarray, block: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Asymmetric 8-bit per block: scale (max-min)/255, integer zero point. Returns parts, w'."""
    n, k = w.shape
    b = w.reshape(n, k // block, block)
    lo = np.minimum(b.min(-1), 0)
    hi = np.maximum(b.max(-1), 0)
    s = ((hi - lo) / 255).astype(np.float32)
    s[s == 0] = 1
    zp = np.clip(np.rint(-lo / s), 0, 255)
    q = np.clip(np.rint(b / s[..., None]) + zp[..., None], 0, 255).astype(np.uint8)
    approx = ((q.astype(np.float32) - zp[..., None].astype(np.float32)) * s[..., None]).reshape(
        n, k
    )
    parts = {"B": q, "scales": s, "zero_points": zp.astype(np.uint8)}
    return parts, approx


def alternatives(
    t: MatMulNBitsTransform, parts: dict[str, np.ndarray], w: np.ndarray
) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, t.k)).astype(np.float32)
    peak = float(np.abs(w).max())
    out: dict[str, Any] = {}

    r_parts, approx = requant8(w, 32)
    r = MatMulNBitsTransform(GGMLQuantizationType.Q8_0, (t.n, t.k))
    model = matmul_model(r, r_parts, accuracy_level=4)
    out["requant8"] = {
        "bytes_per_weight": sum(a.nbytes for a in r_parts.values()) / w.size,
        "weight_max_err": float(np.abs(approx - w).max() / peak),
        "m1_ms": median_time(partial(model, X=x), 50) * 1e3,
        "m1_err": rel_error(model(X=x), x, w),
    }

    # float zero point: w = (q - zp) * scale with zp = min / scale (onnxruntime's slow path)
    zp_f = np.divide(
        parts["mins"], parts["scales"], out=np.zeros_like(parts["mins"]), where=parts["scales"] != 0
    ).astype(np.float32)
    nodes = [
        helper.make_node(
            "MatMulNBits",
            ["X", "B", "scales", "zero_points"],
            ["Y"],
            domain="com.microsoft",
            K=t.k,
            N=t.n,
            bits=t.bits,
            block_size=t.block_size,
            accuracy_level=4,
        )
    ]
    x_info = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["M", t.k])
    y_info = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", t.n])
    weights = {"B": parts["B"], "scales": parts["scales"], "zero_points": zp_f}
    codes = unpack_codes(parts["B"].reshape(t.n, -1), t.bits).reshape(t.n, t.n_blocks, -1)
    approx = ((codes - zp_f[..., None]) * parts["scales"][..., None]).reshape(w.shape)
    # a block with scale 0 and a nonzero min has no float zero point: left out of the error
    usable = np.repeat(parts["scales"] != 0, t.block_size, axis=1)
    fzp: dict[str, Any] = {
        "bytes_per_weight": (parts["B"].nbytes + 8 * parts["scales"].size) / w.size,
        "weight_max_err": float(np.abs(approx - w)[usable].max() / peak),
    }
    try:
        model = build(nodes, [x_info], y_info, weights)
        fzp["m1_ms"] = median_time(partial(model, X=x), 5) * 1e3
        fzp["m1_err"] = rel_error(model(X=x), x, w)
    except Exception as exc:  # onnxruntime takes float zero points for 2 and 4 bits only
        fzp["error"] = str(exc).splitlines()[-1][-120:]
    out["float_zp"] = fzp
    return out


# --- main -----------------------------------------------------------------------------------


def measure(name: str, size: int, reps: int) -> dict[str, Any]:
    qtype = GGMLQuantizationType[name]
    shape = (size, size)
    raw = random_blocks(qtype, shape, seed=7, from_bytes=name not in ("Q8_0",))
    w = quants.dequantize(raw, qtype)
    t = MatMulNBitsTransform(qtype, shape)
    parts = t.apply(raw)
    d = DequantizeTransform(qtype, shape)
    row: dict[str, Any] = {
        "type": name,
        "layout": t.describe(),
        "gguf_bytes_per_weight": raw.nbytes / w.size,
        "bytes_per_weight": sum(a.nbytes for a in parts.values()) / w.size,
        "transform_MBps": raw.nbytes / 1e6 / best_time(lambda: t.apply(raw), reps),
        "dequant_MBps": raw.nbytes / 1e6 / best_time(lambda: d.apply(raw), max(2, reps // 2)),
        "layout_max_abs_err": float(np.abs(t.dequantize(parts) - w).max()),
    }
    row.update(ort_figures(t, parts, w))
    if t.has_mins:
        row["alternatives"] = alternatives(t, parts, w)
    return row


def markdown(rows: list[dict[str, Any]], fp32: dict[str, float]) -> str:
    lines = [
        "| type | layout | GGUF B/w | layout B/w | transform MB/s | dequant MB/s | layout err "
        "| M=1 acc4 ms | M=32 acc4 ms | M=1 acc0 ms | err acc4 | err acc0 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['type']} | {r['layout']} | {r['gguf_bytes_per_weight']:.3f} "
            f"| {r['bytes_per_weight']:.3f} | {r['transform_MBps']:.0f} | {r['dequant_MBps']:.0f} "
            f"| {r['layout_max_abs_err']:.0f} | {r['acc4_m1_ms']:.3f} | {r['acc4_m32_ms']:.2f} "
            f"| {r['acc0_m1_ms']:.2f} | {r['acc4_m1_err']:.1e} | {r['acc0_m1_err']:.1e} |"
        )
    lines.append(
        f"\nfp32 MatMul baseline (dequantize fallback, 4 B/w): M=1 {fp32['m1_ms']:.2f} ms, "
        f"M=32 {fp32['m32_ms']:.2f} ms"
    )
    alt = [r for r in rows if "alternatives" in r]
    if alt:
        lines += [
            "\nFormats with a min: exact split vs alternatives (M=1, accuracy_level 4; "
            "weight err = max|w' - w| / max|w|; out err = vs X @ W^T, relative)",
            "",
            "| type | layout | B/w | weight err | M=1 ms | out err |",
            "|---|---|---|---|---|---|",
        ]
        for r in alt:
            a = r["alternatives"]
            lines.append(
                f"| {r['type']} | exact split | {r['bytes_per_weight']:.3f} | 0 "
                f"| {r['acc4_m1_ms']:.3f} | {r['acc4_m1_err']:.1e} |"
            )
            q = a["requant8"]
            lines.append(
                f"| {r['type']} | requant 8-bit | {q['bytes_per_weight']:.3f} "
                f"| {q['weight_max_err']:.1e} | {q['m1_ms']:.3f} | {q['m1_err']:.1e} |"
            )
            f = a["float_zp"]
            timing = (
                f"| {f['m1_ms']:.3f} | {f['m1_err']:.1e} |" if "m1_ms" in f else "| fails | - |"
            )
            lines.append(
                f"| {r['type']} | float zero point | {f['bytes_per_weight']:.3f} "
                f"| {f['weight_max_err']:.1e} " + timing
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", default=",".join(t.name for t in FORMATS))
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = []
    for name in args.types.split(","):
        rows.append(measure(name, args.size, args.reps))
        print(f"{name}: done", file=sys.stderr, flush=True)
    fp32 = fp32_matmul_ms(args.size, args.size)
    print(markdown(rows, fp32))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"size": args.size, "rows": rows, "fp32": fp32}, indent=1))


if __name__ == "__main__":
    main()
