"""Cost of checking the mapped weight files before every compute (truncation / rewrite
detection, one ``fstat`` per file) on a real model's decode step.

Loads the demo model (gemma3-270m: its GGUF is four part files, all mapped), then times
``--steps`` one-token decode steps with the checks and with them switched off,
interleaved in rounds, and the checks alone. Prints medians.

    python -m benchmarks.bench_mapped_check [--model gemma3-270m] [--steps 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loaders import load_model  # noqa: E402


async def decode_steps(model: object, steps: int) -> float:
    """Median seconds of one decode step over ``steps`` steps."""
    model.reset()  # type: ignore[attr-defined]
    await model.forward([2])  # type: ignore[attr-defined]
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        await model.forward([100])  # type: ignore[attr-defined]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    model = await load_model(args.model)
    graph = model.graph
    checks = list(graph.source_checks)
    print(f"{args.model}: {len(checks)} mapped files checked per call")
    reps = 10000
    start = time.perf_counter()
    for _ in range(reps):
        for check in checks:
            check()
    per_call = (time.perf_counter() - start) / reps
    with_checks, without = [], []
    for _ in range(args.rounds):
        graph.source_checks = checks
        with_checks.append(await decode_steps(model, args.steps))
        graph.source_checks = []
        without.append(await decode_steps(model, args.steps))
    graph.source_checks = checks
    a, b = statistics.median(with_checks), statistics.median(without)
    print(f"checks alone: {per_call * 1e6:.2f} us per call")
    print(f"decode step: {a * 1e3:.3f} ms with checks, {b * 1e3:.3f} ms without")
    print(f"checks / step: {per_call / b * 100:.3f} %")


if __name__ == "__main__":
    asyncio.run(main())
