"""LLM speed and memory: pullweights vs llama.cpp on the same GGUF, side by side.

Each repetition starts one fresh process per runtime, in alternating order so machine
noise hits both alike: pullweights (``python -m benchmarks.bench_llm --worker``) and
llama.cpp (llama-cpp-python in its own venv, ``benchmarks/llamacpp_worker.py``). A
process loads the model (timed), then ``--inner`` times prefills the same prompt from an
empty cache and decodes ``--decode`` greedy tokens one step at a time. Reported: load
time, time to first token (prefill + picking the token), prefill and decode tokens/s,
peak RSS (VmHWM) and peak private (anonymous) memory sampled every 10 ms — medians over
every run, and pullweights / llama.cpp ratios.

    python -m benchmarks.bench_llm [--model gemma3-270m] [--repeats 3]

pullweights runs warm (the weight cache is filled by an uncounted first run) with its
default settings (int8 activations, context 2048 like llama.cpp's ``n_ctx``); both use
``--threads`` threads. JSON goes to ``benchmarks/results/llm.json`` (one entry per model).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.compare_llamacpp import LLAMACPP_PYTHON, RESULTS, WORKER, assembled_gguf

TEXT = (
    "The history of the city begins with a small settlement on an island in the river. "
    "Over the centuries it grew into a centre of trade, learning and government, and its "
    "bridges, markets and churches drew travellers from every part of the continent. "
)


async def pullweights_worker(request: dict[str, Any]) -> dict[str, Any]:
    """The pullweights side of one process: load, then prefill + decode ``repeats`` times."""
    from loaders import load_model
    from pullweights.memstats import MemoryMonitor
    from pullweights.runtime.context import create_context

    with MemoryMonitor() as monitor:
        start = time.perf_counter()
        context = create_context(
            cache_dir=request["cache_dir"], intra_op_threads=int(request["n_threads"])
        )
        stages = request.get("stages", "auto")
        model = await load_model(
            request["model"],
            context=context,
            context_length=request["n_ctx"],
            stages=int(stages) if str(stages).isdigit() else stages,
        )
        load_s = time.perf_counter() - start
        prompt = np.asarray(request["prompt"], dtype=np.int64)
        runs = []
        for _ in range(int(request["repeats"])):
            model.reset()
            t0 = time.perf_counter()
            token = int(np.argmax((await model.forward(prompt))[-1]))
            t1 = time.perf_counter()
            for _ in range(int(request["decode"])):
                token = int(np.argmax((await model.forward([token]))[-1]))
            t2 = time.perf_counter()
            runs.append({"prefill_s": t1 - t0, "decode_s": t2 - t1})
    return {
        "load_s": load_s,
        "runs": runs,
        "peak_rss": monitor.peak_rss,
        "peak_private": monitor.peak_anonymous,
        "cache_hits": model.stats.cache_hits,
        "transformed": model.stats.transformed,
        "stages": len(model.graph.stages),
    }


def run_worker(method: str, request: dict[str, Any]) -> dict[str, Any]:
    """One fresh process of ``method``; returns its JSON result."""
    with tempfile.TemporaryDirectory(prefix="pw-bench-") as tmp:
        path = Path(tmp, "request.json")
        if method.startswith("pullweights"):
            _, _, stages = method.partition(":")
            path.write_text(json.dumps({**request, "stages": stages or "auto"}))
            cmd = [sys.executable, "-m", "benchmarks.bench_llm", "--worker", str(path)]
        else:
            path.write_text(json.dumps({**request, "model": request["gguf"], "mode": "bench"}))
            cmd = [LLAMACPP_PYTHON, str(WORKER), str(path)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return result


def summarize(results: list[dict[str, Any]], prompt_tokens: int, decode: int) -> dict[str, Any]:
    runs = [r for res in results for r in res["runs"]]
    return {
        "processes": len(results),
        "runs": len(runs),
        "load_s": statistics.median(r["load_s"] for r in results),
        "time_to_first_token_s": statistics.median(r["prefill_s"] for r in runs),
        "prefill_tokens_per_s": statistics.median(prompt_tokens / r["prefill_s"] for r in runs),
        "decode_tokens_per_s": statistics.median(decode / r["decode_s"] for r in runs),
        "peak_rss_mib": statistics.median(r["peak_rss"] for r in results) / 2**20,
        "peak_private_mib": statistics.median(r["peak_private"] for r in results) / 2**20,
    }


def prompt_ids(model: str, n: int) -> list[int]:
    """``n`` token ids of :data:`TEXT` repeated (BOS first where the model adds one)."""

    async def encode() -> list[int]:
        from loaders.tokenizer import Tokenizer
        from pullweights.gguf.reader import open_gguf

        async with await open_gguf(model) as gguf:
            tokenizer = Tokenizer.from_gguf_metadata(gguf.metadata)
        ids = tokenizer.encode(TEXT * (n // 20 + 1))
        return ids[:n]

    return asyncio.run(encode())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--decode", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="processes per runtime")
    parser.add_argument("--inner", type=int, default=2, help="prefill+decode runs per process")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument(
        "--stages",
        default="auto",
        help="comma-separated stage plans to compare (auto, marked, or a count; 1 = one session)",
    )
    parser.add_argument("--gguf-dir", default="/tmp")
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "pullweights"))
    parser.add_argument("--out", default=str(RESULTS / "llm.json"))
    args = parser.parse_args()
    if args.worker:
        request = json.loads(Path(args.worker).read_text())
        print(json.dumps(asyncio.run(pullweights_worker(request))))
        return 0

    prompt = prompt_ids(args.model, args.prompt_tokens)
    request = {
        "model": args.model,
        "gguf": str(assembled_gguf(args.model, Path(args.gguf_dir))),
        "prompt": prompt,
        "decode": args.decode,
        "repeats": args.inner,
        "n_ctx": args.context,
        "n_threads": args.threads,
        "cache_dir": args.cache_dir,
    }
    plans = [p.strip() for p in args.stages.split(",") if p.strip()]
    methods = ["pullweights" if p == "auto" else f"pullweights:{p}" for p in plans]
    for method in methods:  # fills the weight cache and saved sessions; not counted
        warm = run_worker(method, request)
        print(f"warm-up {method}: load {warm['load_s']:.1f} s", file=sys.stderr)
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in [*methods, "llama.cpp"]}
    for rep in range(args.repeats):
        order = list(results) if rep % 2 == 0 else list(reversed(results))
        for method in order:
            results[method].append(run_worker(method, request))
            last = results[method][-1]["runs"][-1]
            print(
                f"rep {rep} {method}: prefill {len(prompt) / last['prefill_s']:.1f} tok/s, "
                f"decode {args.decode / last['decode_s']:.1f} tok/s",
                file=sys.stderr,
            )
    summary = {m: summarize(r, len(prompt), args.decode) for m, r in results.items()}
    ll = summary["llama.cpp"]
    ratios: dict[str, dict[str, float]] = {}
    for method in methods:
        pw = summary[method]
        ratios[method] = {
            "prefill_over_llamacpp": pw["prefill_tokens_per_s"] / ll["prefill_tokens_per_s"],
            "decode_over_llamacpp": pw["decode_tokens_per_s"] / ll["decode_tokens_per_s"],
            "ttft_over_llamacpp": pw["time_to_first_token_s"] / ll["time_to_first_token_s"],
            "load_over_llamacpp": pw["load_s"] / ll["load_s"],
            "peak_private_over_llamacpp_peak_rss": pw["peak_private_mib"] / ll["peak_rss_mib"],
            "peak_rss_over_llamacpp": pw["peak_rss_mib"] / ll["peak_rss_mib"],
        }
    entry = {
        "setup": {
            **{k: v for k, v in request.items() if k != "prompt"},
            "prompt_tokens": len(prompt),
            "date": time.strftime("%Y-%m-%d %H:%M"),
        },
        "summary": summary,
        "ratios": ratios,
        "raw": results,
    }
    out = Path(args.out)
    everything = json.loads(out.read_text()) if out.exists() else {}
    everything[f"{args.model} threads={args.threads}"] = entry
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(everything, indent=2) + "\n")
    print(json.dumps({"summary": summary, "ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
