"""Stacked weights (Q/K/V as one ``MatMulNBits``) against one matmul each.

``python -m benchmarks.bench_fusion --model M [--threads T]`` measures, side by side:

* **the bare op**: ``MatMulNBits`` (8-bit, block 32, ``accuracy_level`` 4, prepacked) at
  M = 1 over random weights of the model's shapes, the group's matrices one by one
  against one matrix of their stacked rows followed by the ``Split`` a load adds, the two
  sessions' runs interleaved (medians of 400);
* **the model**: the model loaded twice from the warm cache, ``stack_weights`` on and
  off, prefill of 128 tokens and greedy decode steps interleaved between the two copies.
  Stacking changes the order of float sums inside onnxruntime's kernels, so the logits
  may differ in their last bits (and, through int8 activations, by more); the largest
  difference is reported.

JSON in ``benchmarks/results/fusion.json`` (one entry per model and thread count).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from benchmarks.common import cpu_session, save_entry
from loaders import load_model
from loaders.model import LanguageModel
from pullweights.gguf.reader import open_gguf
from pullweights.gguf.stacked import STACKS, stack_members
from pullweights.runtime.context import create_context

RESULTS = Path(__file__).parent / "results"


def _op_session(k: int, groups: list[list[int]], stacked: bool, threads: int) -> Any:
    rng = np.random.default_rng(0)
    nodes, inits, outs = [], [], []
    for gi, rows in enumerate(groups):
        for pi, n in enumerate([sum(rows)] if stacked else rows):
            name = f"w{gi}_{pi}"
            blocks = k // 32
            codes = rng.integers(0, 255, (n, blocks, 32), np.uint8)
            inits += [
                numpy_helper.from_array(codes, name + "B"),
                numpy_helper.from_array(rng.random((n, blocks), np.float32) * 0.01, name + "s"),
                numpy_helper.from_array(np.full((n, blocks), 128, np.uint8), name + "z"),
            ]
            nodes.append(
                helper.make_node(
                    "MatMulNBits",
                    ["x", name + "B", name + "s", name + "z"],
                    [name + "y"],
                    domain="com.microsoft",
                    K=k,
                    N=n,
                    bits=8,
                    block_size=32,
                    accuracy_level=4,
                )
            )
            if stacked:
                split = [f"{name}o{j}" for j in range(len(rows))]
                inits.append(numpy_helper.from_array(np.array(rows, np.int64), name + "sp"))
                nodes.append(helper.make_node("Split", [name + "y", name + "sp"], split, axis=-1))
                outs += split
            else:
                outs.append(name + "y")
    graph = helper.make_graph(
        nodes,
        "stacks",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs],
        inits,
    )
    return cpu_session(graph, threads)


async def bare_op(model_name: str, threads: int) -> dict[str, Any]:
    """Microseconds per block for the stacks of block 0, one by one and stacked."""
    async with await open_gguf(model_name) as gguf:
        k = gguf.tensor("blk.0.attn_q.weight").shape[1]
        groups = [
            [gguf.tensor(n).shape[0] for n in stack_members("blk.0.", stack)] for stack in STACKS
        ]
    sessions = {s: _op_session(k, groups, s, threads) for s in (False, True)}
    x = np.random.default_rng(1).random((1, k), np.float32)
    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(450):
        for stacked, session in sessions.items():
            start = time.perf_counter()
            session.run(None, {"x": x})
            if i >= 50:
                times[stacked].append(time.perf_counter() - start)
    separate, stacked_us = (statistics.median(times[s]) * 1e6 for s in (False, True))
    return {
        "k": k,
        "groups": groups,
        "separate_us": round(separate, 1),
        "stacked_us": round(stacked_us, 1),
    }


async def _prefill(model: LanguageModel, prompt: np.ndarray) -> tuple[float, np.ndarray]:
    model.reset()
    start = time.perf_counter()
    logits = await model.forward(prompt)
    return time.perf_counter() - start, logits


async def whole_model(model_name: str, threads: int, steps: int) -> dict[str, Any]:
    """Prefill and decode step times with stacking on and off, interleaved."""
    ctx = create_context(intra_op_threads=threads)
    models = {
        on: await load_model(model_name, context=ctx, context_length=2048, stack_weights=on)
        for on in (True, False)
    }
    prompt = np.arange(100, 228, dtype=np.int64)
    prefill: dict[bool, list[float]] = {True: [], False: []}
    last: dict[bool, np.ndarray] = {}
    for _ in range(8):
        for on, model in models.items():
            seconds, last[on] = await _prefill(model, prompt)
            prefill[on].append(seconds)
    token = int(np.argmax(last[True][-1]))
    decode: dict[bool, list[float]] = {True: [], False: []}
    diff = float(np.abs(last[True] - last[False]).max())
    for _ in range(steps):
        out = {}
        for on, model in models.items():
            start = time.perf_counter()
            out[on] = (await model.forward([token])).copy()
            decode[on].append(time.perf_counter() - start)
        diff = max(diff, float(np.abs(out[True] - out[False]).max()))
        token = int(np.argmax(out[True][-1]))
    skip = min(10, steps // 4)
    result: dict[str, Any] = {"max_abs_logit_diff": diff}
    for on, label in ((True, "stacked"), (False, "separate")):
        result[f"{label}_prefill_ms"] = round(statistics.median(prefill[on]) * 1e3, 1)
        result[f"{label}_decode_step_ms"] = round(statistics.median(decode[on][skip:]) * 1e3, 2)
    result["decode_separate_over_stacked"] = round(
        result["separate_decode_step_ms"] / result["stacked_decode_step_ms"], 4
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", default=str(RESULTS / "fusion.json"))
    args = parser.parse_args()
    result = {
        "model": args.model,
        "threads": args.threads,
        "bare_op": asyncio.run(bare_op(args.model, args.threads)),
        "model_ab": asyncio.run(whole_model(args.model, args.threads, args.steps)),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    print(json.dumps(result, indent=1))
    save_entry(args.out, f"{args.model} threads={args.threads}", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
