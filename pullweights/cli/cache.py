"""``pullweights cache``: the on-disk weight cache, in terms of models.

::

    pullweights cache list [--tensors] [--json]
    pullweights cache rm MODEL [--json]
    pullweights cache verify [KEY | MODEL] [--keep] [--json]
    pullweights cache prune (--max-size 2G | --older-than 7d | --all) [--json]
    pullweights cache path

Every subcommand takes ``--cache-dir DIR`` (default ``$PULLWEIGHTS_CACHE`` or
``~/.cache/pullweights``). ``list`` shows one row per model (its weight entries and
saved onnxruntime sessions), ``--tensors`` one row per entry; ``rm`` and ``prune``
remove whole models. :func:`run` is synchronous and returns the exit status.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from pullweights.cache import CacheProblem, EntryInfo, ModelInfo, WeightCache, format_size
from pullweights.cache.sizes import parse_duration, parse_size
from pullweights.errors import CacheError

__all__ = ["add_parser", "run"]


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``cache`` and its subcommands; sets ``args.run`` to :func:`run`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="cache directory (default: $PULLWEIGHTS_CACHE or ~/.cache/pullweights)",
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON instead of a table")

    parser = subparsers.add_parser(
        "cache",
        help="inspect and clean the on-disk weight cache",
        description="Inspect and clean the on-disk weight cache.",
    )
    parser.set_defaults(run=run)
    commands = parser.add_subparsers(dest="cache_command", required=True, metavar="COMMAND")

    listing = commands.add_parser(
        "list", parents=[common, as_json], help="list models, most recently used first"
    )
    listing.add_argument(
        "--tensors", action="store_true", help="list every weight entry and saved session"
    )

    rm = commands.add_parser(
        "rm", parents=[common, as_json], help="remove a model with its entries and sessions"
    )
    rm.add_argument("model", metavar="MODEL", help="model name, path, URL or key (see list)")

    verify = commands.add_parser(
        "verify",
        parents=[common, as_json],
        help="re-read and checksum everything; remove broken entries and abandoned writes",
    )
    verify.add_argument(
        "key", nargs="?", metavar="KEY|MODEL", help="verify only this entry or model"
    )
    verify.add_argument("--keep", action="store_true", help="report problems, remove nothing")

    prune = commands.add_parser(
        "prune", parents=[common, as_json], help="remove whole models to free space"
    )
    prune.add_argument(
        "--max-size",
        type=_size,
        metavar="SIZE",
        help="remove least-recently-used models until the cache holds at most SIZE "
        "(e.g. 500M, 2G; binary units)",
    )
    prune.add_argument(
        "--older-than",
        type=_duration,
        metavar="AGE",
        help="remove models not used for AGE (e.g. 12h, 7d, 2w)",
    )
    prune.add_argument("--all", action="store_true", help="remove everything")

    commands.add_parser("path", parents=[common], help="print the cache directory")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run a ``cache`` subcommand parsed by :func:`add_parser`; returns the exit status.

    0: success; 1: ``verify`` found problems, or the cache could not be used.
    """
    out = out or sys.stdout
    try:
        cache = WeightCache(args.cache_dir)
        match args.cache_command:
            case "list":
                return _list(cache, args, out)
            case "rm":
                return _rm(cache, args, out)
            case "verify":
                return _verify(cache, args, out)
            case "prune":
                return _prune(cache, args, out)
            case "path":
                print(cache.root, file=out)
                return 0
    except CacheError as exc:
        print(f"pullweights cache: error: {exc}", file=sys.stderr)
        return 1
    raise ValueError(f"unknown cache command {args.cache_command!r}")


def _count(n: int, what: str = "entry") -> str:
    plural = "entries" if what == "entry" else f"{what}s"
    return f"{n} {what}" if n == 1 else f"{n} {plural}"


def _entry_json(e: EntryInfo) -> dict[str, Any]:
    return {
        "key": e.key,
        "kind": e.kind,
        "label": e.label,
        "bytes": e.nbytes,
        "transform": e.transform,
        "parts": {n: {"dtype": d.dtype, "shape": list(d.shape)} for n, d in e.parts.items()},
        "source": e.source,
        "source_name": e.source_name,
        "offset": e.offset,
        "length": e.length,
        "created": e.created,
        "last_used": e.last_used,
        "path": str(e.path),
    }


def _model_json(m: ModelInfo) -> dict[str, Any]:
    return {
        "key": m.key,
        "name": m.name,
        "source": m.source,
        "source_name": m.source_name,
        "url": m.url,
        "bytes": m.nbytes,
        "last_used": m.last_used,
        "entries": [e.key for e in m.entries],
        "sessions": [e.key for e in m.sessions],
    }


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _entry_table(entries: list[EntryInfo], out: TextIO) -> None:
    print(f"{'KEY':<12}  {'SIZE':>10}  {'LAST USED':<16}  {'TRANSFORM':<16}  LABEL", file=out)
    for e in entries:
        label = e.label or e.source_name
        print(
            f"{e.key[:12]}  {format_size(e.nbytes):>10}  {_when(e.last_used)}  "
            f"{e.transform:<16}  {label}",
            file=out,
        )


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3) :]


def _model_table(models: list[ModelInfo], out: TextIO) -> None:
    print(
        f"{'NAME':<24}  {'SIZE':>10}  {'LAST USED':<16}  {'ENTRIES':>7}  {'SESSIONS':>8}  SOURCE",
        file=out,
    )
    for m in models:
        print(
            f"{_short(m.name, 24):<24}  {format_size(m.nbytes):>10}  {_when(m.last_used)}  "
            f"{len(m.entries):>7}  {len(m.sessions):>8}  {m.url or m.source_name or '-'}",
            file=out,
        )


def _list(cache: WeightCache, args: argparse.Namespace, out: TextIO) -> int:
    entries = cache.entries()
    total = sum(e.nbytes for e in entries)
    if args.tensors:
        if args.json:
            doc = {
                "root": str(cache.root),
                "bytes": total,
                "entries": [_entry_json(e) for e in entries],
            }
            json.dump(doc, out, indent=1)
            print(file=out)
            return 0
        if entries:
            _entry_table(entries, out)
        print(f"{_count(len(entries))}, {format_size(total)} in {cache.root}", file=out)
        return 0
    models = cache.models()
    if args.json:
        doc = {"root": str(cache.root), "bytes": total, "models": [_model_json(m) for m in models]}
        json.dump(doc, out, indent=1)
        print(file=out)
        return 0
    if models:
        _model_table(models, out)
    named = sum(1 for m in models if m.key)
    print(
        f"{_count(named, 'model')} ({_count(len(entries))}), {format_size(total)} in {cache.root}",
        file=out,
    )
    return 0


def _rm(cache: WeightCache, args: argparse.Namespace, out: TextIO) -> int:
    model = cache.remove_model(args.model)
    if args.json:
        json.dump(_model_json(model), out, indent=1)
        print(file=out)
        return 0
    print(f"removed model {model.name} ({format_size(model.nbytes)}) from {cache.root}", file=out)
    return 0


def _problem_json(p: CacheProblem) -> dict[str, Any]:
    return {"key": p.key, "path": str(p.path), "problem": p.problem, "removed": p.removed}


def _verify(cache: WeightCache, args: argparse.Namespace, out: TextIO) -> int:
    checked = 1 if args.key else len(cache.entries())
    problems = cache.verify(args.key, remove=not args.keep)
    if args.json:
        json.dump([_problem_json(p) for p in problems], out, indent=1)
        print(file=out)
    else:
        for p in problems:
            print(p, file=out)
        what = f"{args.key}" if args.key else _count(checked)
        status = f"{len(problems)} problems" if problems else "ok"
        print(f"verified {what} in {cache.root}: {status}", file=out)
    return 1 if problems else 0


def _prune(cache: WeightCache, args: argparse.Namespace, out: TextIO) -> int:
    if args.max_size is None and args.older_than is None and not args.all:
        print(
            "pullweights cache prune: error: give --max-size, --older-than or --all",
            file=sys.stderr,
        )
        return 2
    before = cache.total_bytes()
    removed = cache.prune(max_bytes=args.max_size, older_than=args.older_than, all=args.all)
    left = cache.entries()
    freed = before - sum(e.nbytes for e in left)
    if args.json:
        doc = {"removed": [_model_json(m) for m in removed], "freed_bytes": freed}
        json.dump(doc, out, indent=1)
        print(file=out)
        return 0
    if removed:
        _model_table(removed, out)
    named = sum(1 for m in cache.models() if m.key)
    print(
        f"removed {_count(sum(1 for m in removed if m.key), 'model')} "
        f"({_count(sum(len(m.entries) + len(m.sessions) for m in removed))}, "
        f"{format_size(freed)}); {_count(named, 'model')}, "
        f"{format_size(sum(e.nbytes for e in left))} left in {cache.root}",
        file=out,
    )
    return 0
