"""Logits of pullweights vs llama.cpp on the demo models: top-1 agreement and max |diff|.

Both run the same GGUF on the same token ids (tokenized by pullweights; every position
of each prompt, each prompt from an empty cache). llama.cpp runs in its own venv in a
subprocess (``benchmarks/llamacpp_worker.py``, ``logits_all=True``, f16 KV cache as it
ships); pullweights runs with int8 activations (``accuracy_level=4``, the default) and
with exact float activations (``accuracy_level=0``).

    python -m benchmarks.compare_llamacpp [--models gemma3-270m qwen2.5-coder-0.5b] [--reference]

Writes ``benchmarks/results/llamacpp_agreement.json`` and prints a markdown table (also
saved next to the JSON). llama.cpp needs one assembled GGUF file: the part files are
concatenated once to ``/tmp/<model>.gguf`` (override with ``--gguf-dir``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

LLAMACPP_PYTHON = os.environ.get("PULLWEIGHTS_LLAMACPP_PYTHON", "/work/llamacpp-venv/bin/python")
WORKER = Path(__file__).with_name("llamacpp_worker.py")
RESULTS = Path(__file__).with_name("results")

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "Once upon a time, in a small village at the edge of the forest, there lived",
    "The three primary colors are red, yellow and",
    "Water boils at 100 degrees Celsius at sea level. At higher altitudes, it boils",
    "import numpy as np\n\nx = np.arange(10)\nprint(x.",
    "Translate to French: 'Good morning, how are you?' ->",
    "The quick brown fox jumps over the lazy dog. The quick brown fox",
]


def assembled_gguf(name: str, directory: Path) -> Path:
    """The installed model ``name`` as one GGUF file (concatenated once, then reused)."""
    from pullweights.gguf.installed import installed_model_parts

    parts = installed_model_parts(name)
    size = sum(p.stat().st_size for p in parts)
    path = directory / f"{name}.gguf"
    if path.exists() and path.stat().st_size == size:
        return path
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                while chunk := f.read(64 << 20):
                    out.write(chunk)
    tmp.replace(path)
    return path


def llamacpp_logits(gguf: Path, prompts: list[list[int]], n_ctx: int) -> list[np.ndarray]:
    """Every position's logits of every prompt, from llama.cpp in its own venv."""
    with tempfile.TemporaryDirectory(prefix="pw-llamacpp-") as tmp:
        request = Path(tmp, "request.json")
        out = Path(tmp, "logits.npz")
        request.write_text(
            json.dumps(
                {
                    "mode": "logits",
                    "model": str(gguf),
                    "prompts": prompts,
                    "out": str(out),
                    "n_ctx": n_ctx,
                }
            )
        )
        subprocess.run([LLAMACPP_PYTHON, str(WORKER), str(request)], check=True)
        with np.load(out) as data:
            return [data[f"p{i}"] for i in range(len(prompts))]


async def pullweights_logits(
    name: str, level: int, cache_dir: str | None
) -> tuple[list[list[int]], list[np.ndarray]]:
    """Token ids of :data:`PROMPTS` and every position's logits, from pullweights."""
    from loaders import load_model
    from pullweights.runtime.context import create_context

    context = create_context(cache_dir=cache_dir or "default")
    model = await load_model(name, context=context, context_length=512, accuracy_level=level)
    ids = [model.tokenizer.encode(p) for p in PROMPTS]
    logits = []
    for tokens in ids:
        model.reset()
        logits.append(np.array(await model.forward(tokens, all_logits=True)))
    return ids, logits


def compare(ours: list[np.ndarray], theirs: list[np.ndarray]) -> dict[str, Any]:
    """Top-1 agreement over all positions; max and median per-position max |diff|."""
    a, b = np.concatenate(ours), np.concatenate(theirs)
    per_position = np.abs(a - b).max(axis=1)
    top5 = np.argsort(-b, axis=1)[:, :5]
    return {
        "positions": int(a.shape[0]),
        "top1_agreement": float(np.mean(a.argmax(1) == b.argmax(1))),
        "top1_in_reference_top5": float(np.mean((top5 == a.argmax(1)[:, None]).any(1))),
        "max_abs_diff": float(per_position.max()),
        "median_position_max_abs_diff": float(np.median(per_position)),
        "last_token_top1_agreement": float(
            np.mean([o[-1].argmax() == t[-1].argmax() for o, t in zip(ours, theirs, strict=True)])
        ),
    }


def reference_logits(gguf: Path, prompts: list[list[int]]) -> list[np.ndarray]:
    """The numpy float64 reference of ``tests/reference`` (gguf-py + ``gguf.quants``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.reference import ReferenceModel

    model = ReferenceModel(gguf)
    return [model.logits(tokens) for tokens in prompts]


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| model | compared | positions | top-1 agreement | max abs diff | "
        "median per-position max diff |",
        "|---|---|---|---|---|---|",
    ]
    for name, model in results["models"].items():
        for pair, r in model["comparisons"].items():
            lines.append(
                f"| {name} | {pair} | {r['positions']} | {100 * r['top1_agreement']:.1f}% | "
                f"{r['max_abs_diff']:.4g} | {r['median_position_max_abs_diff']:.4g} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["gemma3-270m", "qwen2.5-coder-0.5b"])
    parser.add_argument("--levels", nargs="+", type=int, default=[4, 0])
    parser.add_argument("--gguf-dir", default="/tmp")
    parser.add_argument("--cache-dir", default=None, help="pullweights weight cache")
    parser.add_argument("--out", default=str(RESULTS / "llamacpp_agreement.json"))
    parser.add_argument(
        "--reference",
        action="store_true",
        help="also compare both with the numpy float64 reference (slow: ~1 min per model)",
    )
    args = parser.parse_args()
    results: dict[str, Any] = {
        "prompts": PROMPTS,
        "note": "llama.cpp: llama-cpp-python, f16 KV cache, logits_all; pullweights: "
        "same GGUF and token ids, each prompt from an empty KV cache",
        "models": {},
    }
    for name in args.models:
        gguf = assembled_gguf(name, Path(args.gguf_dir))
        entry: dict[str, Any] = {"gguf": str(gguf), "comparisons": {}}
        ids: list[list[int]] = []
        ours: dict[int, list[np.ndarray]] = {}
        for level in args.levels:
            start = time.perf_counter()
            ids, ours[level] = asyncio.run(pullweights_logits(name, level, args.cache_dir))
            print(f"{name}: pullweights level {level}: {time.perf_counter() - start:.1f} s",
                  file=sys.stderr)  # fmt: skip
        theirs = llamacpp_logits(gguf, ids, n_ctx=512)
        entry["prompt_tokens"] = [len(t) for t in ids]
        pairs = entry["comparisons"]
        for level in args.levels:
            key = f"pullweights (accuracy_level {level}) vs llama.cpp"
            pairs[key] = compare(ours[level], theirs)
        if args.reference:
            ref = reference_logits(gguf, ids)
            for level in args.levels:
                pairs[f"pullweights (accuracy_level {level}) vs numpy reference"] = compare(
                    ours[level], ref
                )
            pairs["llama.cpp vs numpy reference"] = compare(theirs, ref)
        results["models"][name] = entry
    table = markdown(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
