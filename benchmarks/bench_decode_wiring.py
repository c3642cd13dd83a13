"""Decode steps with and without the fixed wiring, side by side in one process.

``python -m benchmarks.bench_decode_wiring --model M [--threads T] [--steps N]`` loads the
model twice from the warm cache (one shared context), turns the wiring off in one copy
(``Graph.wire_repeated_calls = False``), prefills both with the same 128-token prompt and
then alternates greedy decode steps between them, so the machine's drift hits both
alike. It checks that both copies pick the same tokens with bit-identical logits, and
reports the median step time of each and their ratio; JSON in
``benchmarks/results/decode_wiring.json`` (one entry per model and thread count).
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

from loaders import load_model
from pullweights.runtime.context import create_context

RESULTS = Path(__file__).parent / "results"


async def measure(model_name: str, threads: int, steps: int, context: int) -> dict[str, Any]:
    """Median decode step (ms) of the wired and the general path, interleaved."""
    ctx = create_context(intra_op_threads=threads)
    wired = await load_model(model_name, context=ctx, context_length=context)
    general = await load_model(model_name, context=ctx, context_length=context)
    general.graph.wire_repeated_calls = False
    prompt = np.arange(100, 228, dtype=np.int64)
    tokens: list[int] = []
    times: dict[str, list[float]] = {"wired": [], "general": []}
    for model in (wired, general):
        model.reset()
        tokens.append(int(np.argmax((await model.forward(prompt))[-1])))
    assert tokens[0] == tokens[1]
    token = tokens[0]
    same = True
    for _ in range(steps):
        if wired.position + 1 > context:
            for model in (wired, general):
                model.reset()
                await model.forward(prompt)
        logits = []
        for name, model in (("wired", wired), ("general", general)):
            start = time.perf_counter()
            out = await model.forward([token])
            times[name].append(time.perf_counter() - start)
            logits.append(out.copy())
        same = same and bool(np.array_equal(logits[0], logits[1]))
        token = int(np.argmax(logits[0][-1]))
    skip = min(10, steps // 4)  # the first steps make the wiring and warm the caches
    wired_ms = statistics.median(times["wired"][skip:]) * 1e3
    general_ms = statistics.median(times["general"][skip:]) * 1e3
    return {
        "model": model_name,
        "threads": threads,
        "steps": steps,
        "stages": len(wired.graph.stages),
        "wired_step_ms": round(wired_ms, 3),
        "general_step_ms": round(general_ms, 3),
        "general_over_wired": round(general_ms / wired_ms, 4),
        "identical_logits": same,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--out", default=str(RESULTS / "decode_wiring.json"))
    args = parser.parse_args()
    result = asyncio.run(measure(args.model, args.threads, args.steps, args.context))
    print(json.dumps(result, indent=1))
    out = Path(args.out)
    entries = json.loads(out.read_text()) if out.exists() else {}
    entries[f"{args.model} threads={args.threads}"] = result
    out.write_text(json.dumps(entries, indent=1) + "\n")
    return 0 if result["identical_logits"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
