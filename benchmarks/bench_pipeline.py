"""The pull pipeline, cold and warm, against its parts alone and against llama.cpp.

Every scenario runs in a fresh process; repetitions run the scenarios interleaved (so
machine noise hits all alike) and the figures are medians. On one model:

``read``       every tensor's bytes read from the file (a mapped touch of every page) or,
               ``--http``, fetched over loopback HTTP from nginx (aiohttp without it)
``transform``  every weight transformed into an empty cache (no compile)
``compile``    every stage compiled from a cache of transformed weights, as a cold load
               compiles (saving each stage's session and re-opening it mapped)
``cold``       ``load_model`` with an empty cache: the whole pipeline (also over HTTP)
``warm``       ``load_model`` again with that cache
``llama.cpp``  llama-cpp-python loading the same file (when its venv exists)

Reported per scenario: seconds (the ``load`` span of the pipeline — pull and compile —
and, for loads, time to ready: the model loaded, tokenizer and warm-up step included),
peak private (anonymous) memory sampled every 5 ms, peak RSS (VmHWM), and the cache on
disk. Overlap efficiency = cold pipeline seconds / max(read, transform, compile): 1.0
when the slowest part hides the other two entirely, their sum's share when nothing
overlaps. Each scenario's CPU time (user + system, all threads) is reported too: parts
that keep every core busy cannot overlap, so ``cpu_bound_s`` = (transform CPU + compile
CPU) / cores is the least a cold pipeline can take, and ``cold_vs_cpu_bound`` is the cold
pipeline over the larger of the two bounds.

    python -m benchmarks.bench_pipeline [--model gemma3-270m] [--repeats 3] [--http]

The page cache is warm in every scenario (the file is read once before the runs).
JSON goes to ``benchmarks/results/pipeline.json`` (one entry per model and transport).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.compare_llamacpp import LLAMACPP_PYTHON, RESULTS, WORKER, assembled_gguf

MIB = 1 << 20


# -- workers (each a fresh process) -------------------------------------------------


def _lowered(gguf: Any, context: Any) -> Any:
    """The model's lowered decoder graph (what load_model builds), without compiling."""
    from loaders import architecture_for
    from loaders.blocks import DecoderInputs
    from loaders.weights import WeightMap
    from pullweights import GraphBuilder
    from pullweights.graph.lowering import lower

    arch = architecture_for(gguf.architecture)
    config = arch.config(gguf.metadata, gguf.tensor("token_embd.weight").shape[0])
    b = GraphBuilder(context)
    io = DecoderInputs.declare(b, config, min(2048, config.train_context))
    logits = arch.build(b, WeightMap(b, gguf), io)
    return lower(b, {"logits": logits, **io.presents})


async def _work(request: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from loaders import load_model
    from pullweights import create_context, events
    from pullweights.gguf.reader import open_gguf
    from pullweights.memstats import MemoryMonitor
    from pullweights.runtime.puller import WeightPuller

    scenario, model, cache = request["scenario"], request["model"], request["cache_dir"]
    spans: dict[int, float] = {}
    load_s: list[float] = []

    def watch(event: events.Event) -> None:
        if event.phase == events.Phase.LOAD:
            if event.kind == "begin":
                spans[event.span] = event.time
            elif event.span in spans:
                load_s.append(event.time - spans.pop(event.span))

    context = create_context(cache_dir=cache, intra_op_threads=int(request["threads"]))
    before = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = before.ru_utime + before.ru_stime
    with MemoryMonitor(interval=0.005) as monitor, events.subscribed(watch):
        start = time.perf_counter()
        if scenario == "read":
            async with await open_gguf(model) as gguf:
                buf = np.empty(max(t.nbytes for t in gguf.tensors.values()), np.uint8)
                total = 0
                for t in gguf.tensors.values():
                    mapped = gguf.source.map(t.offset, t.nbytes)
                    if mapped is not None:  # touch every page, as a transform reads them
                        total += int(np.frombuffer(mapped, np.uint8)[::4096].sum())
                    else:
                        await gguf.source.read_into(t.offset, memoryview(buf)[: t.nbytes])
            seconds = time.perf_counter() - start
        elif scenario == "transform":
            async with await open_gguf(model) as gguf:
                lowered = _lowered(gguf, context)
                puller = WeightPuller(context.cache, budget=context.memory_budget)
                await puller.pull(lowered.weights)
            seconds = time.perf_counter() - start
        elif scenario == "compile":
            async with await open_gguf(model) as gguf:
                lowered = _lowered(gguf, context)
                t0 = time.perf_counter()
                await context.compile(lowered)
                seconds = time.perf_counter() - t0
        else:  # cold / warm: the whole load
            loaded = await load_model(model, context=context, context_length=2048)
            seconds = time.perf_counter() - start
            del loaded
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "seconds": seconds,
        "cpu_s": usage.ru_utime + usage.ru_stime - cpu_before,
        "pipeline_s": load_s[-1] if load_s else seconds,
        "peak_private": monitor.peak_anonymous,
        "peak_rss": monitor.peak_rss,
    }


def _disk(path: Path) -> int:
    total = 0
    seen: set[int] = set()
    for p in path.rglob("*"):
        try:
            st = p.lstat()
        except OSError:
            continue
        if p.is_file() and st.st_ino not in seen:
            seen.add(st.st_ino)
            total += st.st_blocks * 512
    return total


def run(scenario: str, request: dict[str, Any]) -> dict[str, Any]:
    """One fresh process of ``scenario``; its JSON result (plus the cache's size)."""
    with tempfile.TemporaryDirectory(prefix="pw-bench-") as tmp:
        path = Path(tmp, "request.json")
        if scenario == "llama.cpp":
            req = {
                "model": request["gguf"],
                "mode": "bench",
                "prompt": [1, 2, 3, 4],
                "decode": 1,
                "repeats": 1,
                "n_ctx": 2048,
                "n_threads": request["threads"],
            }
            path.write_text(json.dumps(req))
            cmd = [LLAMACPP_PYTHON, str(WORKER), str(path)]
        else:
            path.write_text(json.dumps({**request, "scenario": scenario}))
            cmd = [sys.executable, "-m", "benchmarks.bench_pipeline", "--worker", str(path)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if scenario == "llama.cpp":
        result = {
            "seconds": result["load_s"],
            "pipeline_s": result["load_s"],
            "cpu_s": float("nan"),
            "peak_private": result["peak_private"],
            "peak_rss": result["peak_rss"],
        }
    cache = request.get("cache_dir")
    if cache and Path(cache).exists():
        result["disk"] = _disk(Path(cache))
    return result


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


def bench(args: argparse.Namespace, model_ref: str, gguf: Path, root: Path) -> dict[str, Any]:
    """Every scenario ``args.repeats`` times, interleaved; medians."""
    base = {"model": model_ref, "gguf": str(gguf), "threads": args.threads}
    warm_cache = root / "warm"
    entries_cache = root / "entries"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    # Prepared once, not counted: a cache for warm loads, one of transformed weights only.
    run("cold", {**base, "cache_dir": str(warm_cache)})
    run("transform", {**base, "cache_dir": str(entries_cache)})
    scenarios = ["read", "transform", "compile", "cold", "warm"]
    if Path(LLAMACPP_PYTHON).exists() and not args.http:
        scenarios.append("llama.cpp")
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in scenarios}
    for rep in range(args.repeats):
        for scenario in scenarios:
            cache: Path | None
            if scenario in ("transform", "cold"):
                cache = root / f"{scenario}-{rep}"
            elif scenario == "compile":
                shutil.rmtree(entries_cache / "sessions", ignore_errors=True)
                cache = entries_cache
            elif scenario == "warm":
                cache = warm_cache
            else:
                cache = None
            result = run(scenario, {**base, "cache_dir": None if cache is None else str(cache)})
            rows[scenario].append(result)
            print(
                f"  {scenario:10} {result['seconds']:6.2f} s  "
                f"pipeline {result['pipeline_s']:6.2f} s  "
                f"cpu {result['cpu_s']:6.2f} s  "
                f"private {result['peak_private'] / MIB:5.0f} MiB  "
                f"rss {result['peak_rss'] / MIB:5.0f} MiB",
                file=sys.stderr,
            )
            if scenario in ("transform", "cold") and cache is not None and rep > 0:
                shutil.rmtree(cache, ignore_errors=True)
    summary: dict[str, Any] = {}
    for scenario, results in rows.items():
        summary[scenario] = {
            "runs": len(results),
            "seconds": _median(results, "seconds"),
            "pipeline_s": _median(results, "pipeline_s"),
            "cpu_s": _median(results, "cpu_s"),
            "peak_private_mib": _median(results, "peak_private") / MIB,
            "peak_rss_mib": _median(results, "peak_rss") / MIB,
        }
        if any("disk" in r for r in results):
            summary[scenario]["disk_mib"] = max(r.get("disk", 0) for r in results) / MIB
    parts = max(summary[s]["seconds"] for s in ("read", "transform", "compile"))
    # On n cores, CPU-bound parts cannot take less than their CPU time over n together.
    cpu_bound = (summary["transform"]["cpu_s"] + summary["compile"]["cpu_s"]) / (
        os.cpu_count() or 1
    )
    derived = {
        "overlap_efficiency": summary["cold"]["pipeline_s"] / parts,
        "cpu_bound_s": cpu_bound,
        "cold_vs_cpu_bound": summary["cold"]["pipeline_s"] / max(parts, cpu_bound),
        "sum_of_parts_s": sum(summary[s]["seconds"] for s in ("read", "transform", "compile")),
        "cold_private_vs_warm": summary["cold"]["peak_private_mib"]
        / summary["warm"]["peak_private_mib"],
        "cache_vs_gguf": summary["cold"].get("disk_mib", 0) * MIB / gguf.stat().st_size,
    }
    if "llama.cpp" in summary:
        ref = summary["llama.cpp"]
        derived["cold_ready_vs_llamacpp"] = summary["cold"]["seconds"] / ref["seconds"]
        derived["warm_ready_vs_llamacpp"] = summary["warm"]["seconds"] / ref["seconds"]
        derived["cold_rss_vs_llamacpp"] = summary["cold"]["peak_rss_mib"] / ref["peak_rss_mib"]
        derived["warm_rss_vs_llamacpp"] = summary["warm"]["peak_rss_mib"] / ref["peak_rss_mib"]
    return {"scenarios": summary, "derived": derived}


def table(name: str, result: dict[str, Any]) -> str:
    lines = [
        f"{name}: | scenario | seconds | pipeline s | CPU s | peak private | peak RSS | cache |",
        "|---|---|---|---|---|---|---|",
    ]
    for scenario, s in result["scenarios"].items():
        disk = f"{s['disk_mib']:.0f} MiB" if "disk_mib" in s else "-"
        lines.append(
            f"| {scenario} | {s['seconds']:.2f} | {s['pipeline_s']:.2f} | {s['cpu_s']:.2f} | "
            f"{s['peak_private_mib']:.0f} MiB | {s['peak_rss_mib']:.0f} MiB | {disk} |"
        )
    lines += [f"- {k}: {v:.2f}" for k, v in result["derived"].items()]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--http", action="store_true", help="load over loopback HTTP")
    parser.add_argument("--gguf-dir", default="/tmp")
    parser.add_argument("--work-dir", default="/tmp/pw-bench-pipeline")
    parser.add_argument("--out", default=str(RESULTS / "pipeline.json"))
    args = parser.parse_args()
    if args.worker:
        request = json.loads(Path(args.worker).read_text())
        print(json.dumps(asyncio.run(_work(request))))
        return 0
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    gguf = assembled_gguf(args.model, Path(args.gguf_dir))
    gguf.read_bytes()  # warm page cache for every scenario
    key = f"{args.model}{' (http)' if args.http else ''}"
    if args.http:
        from tests.servers.nginx import NginxServer, nginx_binary

        if nginx_binary() is None:
            print("nginx is not installed; --http needs it", file=sys.stderr)
            return 1
        with NginxServer(gguf.parent) as server:
            result = bench(args, server.url + gguf.name, gguf, Path(args.work_dir))
    else:
        result = bench(args, str(gguf), gguf, Path(args.work_dir))
    result["gguf_mib"] = gguf.stat().st_size / MIB
    result["repeats"] = args.repeats
    out = Path(args.out)
    existing = json.loads(out.read_text()) if out.exists() else {}
    existing[key] = result
    out.write_text(json.dumps(existing, indent=1))
    print(table(key, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
