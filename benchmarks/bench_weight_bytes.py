"""Weight bytes one decode step reads: pullweights' layouts against the GGUF's own.

``python -m benchmarks.bench_weight_bytes --model M`` loads the model from the warm cache
and counts, for every weight onnxruntime prepacks (every ``MatMulNBits``), the bytes of
its repacked parts (``B``, scales, zero points, mins: what the kernel reads for each
token, before onnxruntime's packing adds to it) against the bytes of the GGUF tensors
they come from (what llama.cpp reads for each token), by ggml type. Rows of a stacked
Q/K/V are counted under their own types.

It also probes how fast this machine reads memory: ``numpy.count_nonzero`` over 1 GiB of
``uint8``, split over 1 and 2 threads (best of 5; a lower bound of the bandwidth, and an
L3 cache of this size or more holds part of the array). With the decode speeds of
``benchmarks/results/llm.json`` for the same model, bytes per step x steps per second is
the weight traffic each runtime sustains.

JSON in ``benchmarks/results/weight_bytes.json`` (one entry per model).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from loaders import load_model
from pullweights.gguf.layouts.matmul_nbits import MatMulNBitsTransform
from pullweights.gguf.stacked import MixedStackTransform
from pullweights.runtime.context import create_context
from pullweights.weights import Payload

RESULTS = Path(__file__).parent / "results"
MIB = 1 << 20


def _by_type(payload: Payload, ours: int) -> dict[str, tuple[int, int]]:
    """``{ggml type: (GGUF bytes, pullweights bytes)}`` of one transformed payload."""
    transform = payload.transform
    if isinstance(transform, MixedStackTransform):
        # every row of a stack has the same layout, so its bytes split by rows
        return {
            part.ggml_type.name: (part.n * part.row_bytes, ours * part.n // transform.n)
            for part in transform.parts
        }
    if isinstance(transform, MatMulNBitsTransform):
        return {transform.ggml_type.name: (payload.length, ours)}
    return {"other": (payload.length, ours)}


async def count_bytes(model_name: str) -> dict[str, Any]:
    """Per-type and total bytes of the weights the model's ``MatMulNBits`` read."""
    model = await load_model(model_name, context=create_context(), stages=1)
    ours: dict[int, int] = defaultdict(int)
    payloads: dict[int, Payload] = {}
    for stage in model.graph.stages:
        for ref in stage.lowered.initializer_weights.values():
            payloads[id(ref.payload)] = ref.payload
            ours[id(ref.payload)] += ref.descriptor.nbytes
    types: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for key, payload in payloads.items():
        for name, (gguf_bytes, our_bytes) in _by_type(payload, ours[key]).items():
            types[name][0] += gguf_bytes
            types[name][1] += our_bytes
    gguf_total = sum(g for g, _ in types.values())
    our_total = sum(o for _, o in types.values())
    return {
        "by_type": {
            name: {
                "gguf_mib": g / MIB,
                "pullweights_mib": o / MIB,
                "ratio": o / g,
            }
            for name, (g, o) in sorted(types.items())
        },
        "gguf_mib": gguf_total / MIB,
        "pullweights_mib": our_total / MIB,
        "ratio": our_total / gguf_total,
    }


def read_bandwidth(threads: int, nbytes: int = 1 << 30, repeats: int = 5) -> float:
    """GB/s of ``count_nonzero`` over ``nbytes`` split across ``threads`` (best run)."""
    data = np.ones(nbytes, dtype=np.uint8)
    best = 0.0
    for _ in range(repeats):
        workers = [
            threading.Thread(target=np.count_nonzero, args=(part,))
            for part in np.array_split(data, threads)
        ]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        best = max(best, nbytes / (time.perf_counter() - start) / 1e9)
    return best


def traffic(model_name: str, counted: dict[str, Any]) -> dict[str, Any]:
    """Weight GB/s each runtime sustained in ``llm.json``'s decode runs of the model."""
    path = RESULTS / "llm.json"
    runs = json.loads(path.read_text()) if path.exists() else {}
    out: dict[str, Any] = {}
    for threads in (1, 2):
        entry = runs.get(f"{model_name} threads={threads}")
        if entry is None:
            continue
        summary = entry["summary"]
        pw = summary["pullweights"]["decode_tokens_per_s"]
        ll = summary["llama.cpp"]["decode_tokens_per_s"]
        out[f"threads={threads}"] = {
            "source": f"llm.json, run of {entry['setup']['date']}",
            "pullweights_tok_s": pw,
            "llamacpp_tok_s": ll,
            "pullweights_weight_gb_s": pw * counted["pullweights_mib"] * MIB / 1e9,
            "llamacpp_weight_gb_s": ll * counted["gguf_mib"] * MIB / 1e9,
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--out", default=str(RESULTS / "weight_bytes.json"))
    args = parser.parse_args()
    counted = asyncio.run(count_bytes(args.model))
    result = {
        "model": args.model,
        "bytes_per_step": counted,
        "read_bandwidth_gb_s": {f"threads={t}": read_bandwidth(t) for t in (1, 2)},
        "decode_traffic": traffic(args.model, counted),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    print(json.dumps(result, indent=1))
    out = Path(args.out)
    entries = json.loads(out.read_text()) if out.exists() else {}
    entries[args.model] = result
    out.write_text(json.dumps(entries, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
