"""Warm loads with and without prefetched saved sessions, in fresh processes.

``python -m benchmarks.bench_prefetch --model M [--threads T] [--pairs N]`` loads the model
from the warm cache (an uncounted load first, which also writes its session plan) in N
pairs of fresh processes, ``load_model(prefetch_sessions=False)`` and the default
alternating, and reports each process's time to ready (``load_model`` returning, warm-up
run included) and peak private memory and RSS sampled every 10 ms
(:class:`pullweights.memstats.MemoryMonitor`), with medians.

JSON in ``benchmarks/results/prefetch.json`` (one entry per model and thread count).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import save_entry

RESULTS = Path(__file__).parent / "results"
MIB = 1 << 20


async def _worker(model: str, threads: int, prefetch: bool) -> dict[str, Any]:
    from loaders import load_model
    from pullweights.memstats import MemoryMonitor
    from pullweights.runtime.context import create_context

    with MemoryMonitor() as monitor:
        start = time.perf_counter()
        loaded = await load_model(
            model, context=create_context(intra_op_threads=threads), prefetch_sessions=prefetch
        )
        seconds = time.perf_counter() - start
    return {
        "load_s": seconds,
        "peak_private_mib": monitor.peak_anonymous / MIB,
        "peak_rss_mib": monitor.peak_rss / MIB,
        "prefetched": loaded.graph.prefetched,
        "stages": len(loaded.graph.stages),
    }


def _run(model: str, threads: int, prefetch: bool) -> dict[str, Any]:
    worker = ["--threads", str(threads), "--worker", "on" if prefetch else "off"]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_prefetch", "--model", model, *worker],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--worker", choices=["on", "off"], help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(RESULTS / "prefetch.json"))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(asyncio.run(_worker(args.model, args.threads, args.worker == "on"))))
        return 0
    _run(args.model, args.threads, True)  # warm the cache and write the plan
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for _ in range(args.pairs):
        for name in ("off", "on"):
            runs[name].append(_run(args.model, args.threads, name == "on"))
            print(name, runs[name][-1], file=sys.stderr)
    summary = {
        name: {
            field: statistics.median(r[field] for r in results)
            for field in ("load_s", "peak_private_mib", "peak_rss_mib")
        }
        for name, results in runs.items()
    }
    result = {
        "model": args.model,
        "threads": args.threads,
        "pairs": args.pairs,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "summary": summary,
        "ratios_on_over_off": {
            field: summary["on"][field] / summary["off"][field] for field in summary["on"]
        },
        "runs": runs,
    }
    print(json.dumps({k: result[k] for k in ("summary", "ratios_on_over_off")}, indent=1))
    save_entry(args.out, f"{args.model} threads={args.threads}", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
