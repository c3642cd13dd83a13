"""``pullweights cache``: list, verify and prune the on-disk weight cache.

::

    pullweights cache list [--json]
    pullweights cache verify [KEY] [--keep] [--json]
    pullweights cache prune (--max-size 2G | --older-than 7d | --all) [--json]
    pullweights cache path

Every subcommand takes ``--cache-dir DIR`` (default ``$PULLWEIGHTS_CACHE`` or
``~/.cache/pullweights``). Saved onnxruntime sessions (transform ``onnxruntime <version>
session``) are listed, verified and pruned with the weight entries. :func:`run` is
synchronous and returns the exit status.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from pullweights.cache import CacheProblem, EntryInfo, WeightCache, format_size
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

    commands.add_parser(
        "list", parents=[common, as_json], help="list entries, most recently used first"
    )

    verify = commands.add_parser(
        "verify",
        parents=[common, as_json],
        help="re-read and checksum entries; remove broken ones and abandoned writes",
    )
    verify.add_argument("key", nargs="?", help="verify only this entry")
    verify.add_argument("--keep", action="store_true", help="report problems, remove nothing")

    prune = commands.add_parser(
        "prune", parents=[common, as_json], help="remove entries to free space"
    )
    prune.add_argument(
        "--max-size",
        type=_size,
        metavar="SIZE",
        help="remove least-recently-used entries until the cache holds at most SIZE "
        "(e.g. 500M, 2G; binary units)",
    )
    prune.add_argument(
        "--older-than",
        type=_duration,
        metavar="AGE",
        help="remove entries not used for AGE (e.g. 12h, 7d, 2w)",
    )
    prune.add_argument("--all", action="store_true", help="remove every entry")

    commands.add_parser("path", parents=[common], help="print the cache directory")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run a ``cache`` subcommand parsed by :func:`add_parser`; returns the exit status.

    0: success; 1: ``verify`` found problems, or the cache could not be used.
    """
    out = out or sys.stdout
    cache = WeightCache(args.cache_dir)
    try:
        match args.cache_command:
            case "list":
                return _list(cache, args, out)
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


def _count(n: int) -> str:
    return f"{n} entry" if n == 1 else f"{n} entries"


def _entry_json(e: EntryInfo) -> dict[str, Any]:
    return {
        "key": e.key,
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


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _table(entries: list[EntryInfo], out: TextIO) -> None:
    print(f"{'KEY':<12}  {'SIZE':>10}  {'LAST USED':<16}  {'TRANSFORM':<16}  LABEL", file=out)
    for e in entries:
        label = e.label or e.source_name
        print(
            f"{e.key[:12]}  {format_size(e.nbytes):>10}  {_when(e.last_used)}  "
            f"{e.transform:<16}  {label}",
            file=out,
        )


def _list(cache: WeightCache, args: argparse.Namespace, out: TextIO) -> int:
    entries = cache.entries()
    total = sum(e.nbytes for e in entries)
    if args.json:
        listed = [_entry_json(e) for e in entries]
        doc = {"root": str(cache.root), "bytes": total, "entries": listed}
        json.dump(doc, out, indent=1)
        print(file=out)
        return 0
    if entries:
        _table(entries, out)
    print(f"{_count(len(entries))}, {format_size(total)} in {cache.root}", file=out)
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
        what = f"entry {args.key}" if args.key else _count(checked)
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
    removed = cache.prune(max_bytes=args.max_size, older_than=args.older_than, all=args.all)
    freed = sum(e.nbytes for e in removed)
    if args.json:
        doc = {"removed": [_entry_json(e) for e in removed], "freed_bytes": freed}
        json.dump(doc, out, indent=1)
        print(file=out)
        return 0
    if removed:
        _table(removed, out)
    left = cache.entries()
    print(
        f"removed {_count(len(removed))} ({format_size(freed)}); {_count(len(left))}, "
        f"{format_size(sum(e.nbytes for e in left))} left in {cache.root}",
        file=out,
    )
    return 0
