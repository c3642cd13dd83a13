"""``pullweights profile MODEL [PROMPT]`` / ``pullweights profile -- CMD ...``: memory
timeline, phases and peaks of loading a model, or of any command.

MODEL mode loads the model with :func:`loaders.load_model` and greedily generates a few
tokens in a child process (:mod:`pullweights.profile.model_worker`): the profile starts
from a fresh process, so it counts the model's whole cost and nothing of the profiler
(its imports, matplotlib), it is measured from outside exactly as ``-- CMD`` and the
bench scenarios are, and a crash of the load still leaves a record. ``-- CMD`` runs any
command (e.g. a script that builds its own graph) with ``PULLWEIGHTS_EVENTS`` set so its
phases are seen; its exit status is this command's.

Writes ``NAME.json`` (the record), ``NAME.md`` (summary) and ``NAME.png`` (timeline,
needs the ``plot`` extra) into ``-o DIR``, also when the run fails or is interrupted.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from pullweights.errors import SourceError
from pullweights.gguf.installed import installed_model_names
from pullweights.profile.model_worker import check_model, worker_command

if TYPE_CHECKING:
    from pullweights.profile.record import ProfileRecord

__all__ = ["add_parser", "run"]

DEFAULT_MODEL = "gemma3-270m"
DEFAULT_PROMPT = "The capital of France is"


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output-dir", default=".", help="where to write (default: .)")
    parser.add_argument("--name", default=None, help="file name stem (default: profile-<what>)")
    parser.add_argument("--no-plot", action="store_true", help="write no PNG (no matplotlib)")
    parser.add_argument(
        "--interval", type=float, default=0.01, help="seconds between samples (default 0.01)"
    )


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-tokens", type=int, default=8, help="tokens to generate (8)")
    parser.add_argument("--context", type=int, default=None, help="KV cache length")
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--cache-dir", default=None, help="weight cache directory")
    cache.add_argument("--no-cache", action="store_true", help="do not use the weight cache")
    cache.add_argument(
        "--cold", action="store_true", help="load into a new, empty cache (deleted afterwards)"
    )


def _model_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pullweights profile", add_help=False)
    _common_options(parser)
    _model_options(parser)
    parser.add_argument("inputs", nargs="*")
    return parser


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``profile`` on the ``pullweights`` command line."""
    parser = subparsers.add_parser(
        "profile",
        help="memory timeline, phases and peaks of loading a model or of any command",
        usage="pullweights profile [OPTIONS] [MODEL ...] [PROMPT]\n"
        "       pullweights profile [OPTIONS] -- CMD [ARG ...]",
        description=(
            "Profile loading MODEL and generating a few tokens of PROMPT (in a fresh "
            f"process; default model {DEFAULT_MODEL}, known names: "
            f"{', '.join(installed_model_names())}), or any command after --. Writes a JSON "
            "record, a markdown summary and a PNG timeline into -o DIR."
        ),
    )
    _common_options(parser)
    _model_options(parser)
    parser.add_argument(
        "inputs", nargs=argparse.REMAINDER, metavar="...", help="MODEL [PROMPT], or -- CMD ..."
    )
    parser.set_defaults(run=run)


def _slug(text: str) -> str:
    stem = Path(text.rstrip("/")).name.removesuffix(".gguf") or "run"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem)[:60]


def run(args: argparse.Namespace) -> int:
    """Profile, write the record, summary and plot; returns the profiled run's status.

    Raises:
        SourceError: an unknown model.
        UnsupportedError: matplotlib is missing (and --no-plot was not given).
    """
    from pullweights.profile.command import profile_command
    from pullweights.profile.plot import require_matplotlib

    inputs: list[str] = list(args.inputs)
    command_mode = bool(inputs) and inputs[0] == "--"
    if not command_mode:  # options may follow MODEL / PROMPT
        args = _model_parser().parse_intermixed_args(inputs, namespace=args)
        inputs = list(args.inputs)
    if not args.no_plot:
        require_matplotlib()
    cold_dir: str | None = None
    if command_mode:
        argv = inputs[1:]
        if not argv:
            raise SourceError("profile: no command after --")
        target, name = " ".join(argv), f"profile-{_slug(argv[0])}"
    else:
        model = inputs[:-1] if len(inputs) > 1 else (inputs or [DEFAULT_MODEL])
        prompt = inputs[-1] if len(inputs) > 1 else DEFAULT_PROMPT
        check_model(model)
        cache: str | None = "none" if args.no_cache else (args.cache_dir or "default")
        if args.cold:
            cold_dir = cache = tempfile.mkdtemp(prefix="pullweights-cold-cache-")
        argv = [
            sys.executable,
            *worker_command(
                model,
                prompt=prompt,
                max_tokens=args.max_tokens,
                cache_dir=cache,
                context=args.context,
            ),
        ]
        target = f"{' '.join(model)} ({'cold cache' if args.cold else 'cache: ' + str(cache)})"
        name = f"profile-{_slug(model[0])}"
    try:
        record = profile_command(argv, target=target, interval=args.interval)
    finally:
        if cold_dir is not None:
            shutil.rmtree(cold_dir, ignore_errors=True)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / (args.name or name)
    written = [record.write_json(f"{stem}.json"), record.write_markdown(f"{stem}.md")]
    if not args.no_plot:
        written.append(record.plot(f"{stem}.png"))
    _report(record, written)
    code = record.status.exit_code
    return 0 if code is None else code


def _report(record: ProfileRecord, written: list[Path]) -> None:
    from pullweights.profile.markdown import mib

    lines = [f"profile: {record.status.describe()} after {record.duration:.2f} s"]
    for kind in ("private", "rss"):
        peak = record.peak(kind)
        if peak is not None:
            during = f" during {', '.join(peak.phases)}" if peak.phases else ""
            lines.append(f"  peak {kind}: {mib(peak.nbytes)} at {peak.time:.2f} s{during}")
    lines.append("  wrote " + ", ".join(str(p) for p in written))
    print("\n".join(lines), file=sys.stderr)
