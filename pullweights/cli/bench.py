"""``pullweights bench [MODEL]``: onnxruntime (embedded / external data), pullweights
(cold local, cold over loopback HTTP, warm) and llama.cpp / transformers when available,
each in fresh processes, several interleaved runs, medians.

Writes ``bench-<model>.json``, ``.md`` (the table) and ``.png`` (every scenario's
timeline) into ``-o DIR`` (default ``benchmarks/results`` when it exists here, else the
current directory).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

__all__ = ["add_parser", "run"]

DEFAULT_MODEL = "gemma3-270m"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``bench`` on the ``pullweights`` command line."""
    parser = subparsers.add_parser(
        "bench",
        help="compare loading a model with pullweights, onnxruntime, llama.cpp (fresh processes)",
        description=(
            "Load MODEL (default gemma3-270m; a path or part paths in order) in each scenario, "
            "in fresh processes, --runs rounds interleaved, and report medians of time to "
            "ready, time to first token, peak private memory and peak RSS."
        ),
    )
    parser.add_argument("model", nargs="*", metavar="MODEL", help="installed name or path(s)")
    parser.add_argument("--runs", type=int, default=5, help="runs per scenario (default 5)")
    parser.add_argument("--prompt-tokens", type=int, default=16, help="prompt length (16)")
    parser.add_argument("--context", type=int, default=512, help="KV cache length (512)")
    parser.add_argument("--threads", type=int, default=2, help="compute threads (2)")
    parser.add_argument(
        "--only", action="append", default=[], metavar="KEY",
        help="run only this scenario (repeatable): ort-embedded, ort-external, pw-cold, "
        "pw-http-cold, pw-warm, llama.cpp, transformers",
    )  # fmt: skip
    parser.add_argument("-o", "--output-dir", default=None, help="where to write")
    parser.add_argument("--no-plot", action="store_true", help="write no PNG (no matplotlib)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the bench and write its results.

    Raises:
        SourceError: an unknown model; UnsupportedError: matplotlib is missing.
    """
    from pullweights.bench.report import markdown_table, write_all
    from pullweights.bench.runner import BenchConfig, run_bench
    from pullweights.profile.plot import require_matplotlib

    if not args.no_plot:
        require_matplotlib()
    model = list(args.model) or [DEFAULT_MODEL]
    config = BenchConfig(
        model=model, runs=args.runs, prompt_tokens=args.prompt_tokens, context=args.context,
        threads=args.threads, only=list(args.only),
    )  # fmt: skip
    result = run_bench(config, log=lambda line: print(line, file=sys.stderr, flush=True))
    default_out = Path("benchmarks/results")
    out = (
        Path(args.output_dir)
        if args.output_dir
        else (default_out if default_out.is_dir() else Path("."))
    )
    stem = "bench-" + re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model[0]).name.removesuffix(".gguf"))
    written = write_all(result, out, stem, plot=not args.no_plot)
    print(markdown_table(result))
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    failed = [r for r in result.runs if not r.ok]
    return 1 if failed else 0
