"""The ``pullweights`` command line: ``run``, ``inspect``, ``pull`` and ``cache``.

Each subcommand lives in its own module with ``add_parser(subparsers)`` and
``run(args) -> int`` (sync or async). Options may stand anywhere among a subcommand's
arguments (:class:`~pullweights.cli.parsing.CommandParser`). Handled here, once for every
subcommand:

* pullweights errors: one line on stderr, exit status 1; usage errors found after parsing
  (:class:`~pullweights.cli.parsing.UsageError`): one line, exit status 2;
* Ctrl-C: "interrupted", exit status 130 (``run`` ends its own generation first);
* a closed stdout (``pullweights cache list | head``): no traceback, exit status 141
  (128 + SIGPIPE, as a program killed by the signal).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect as _inspect
import os
import sys
from collections.abc import Sequence

from pullweights.cli.parsing import CommandParser, UsageError, version_text
from pullweights.errors import PullWeightsError

__all__ = ["main"]

SUBCOMMANDS = ("run", "chat", "serve", "inspect", "pull", "cache", "profile", "bench", "export")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    """The top-level parser and the module behind each registered subcommand."""
    parser = CommandParser(
        prog="pullweights",
        description="Load neural-network weights on demand and run models on onnxruntime.",
    )
    parser.add_argument("--version", action="version", version=version_text())
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=CommandParser
    )
    modules: dict[str, object] = {}
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"pullweights.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"pullweights.cli.{name}":
                raise
            continue
        before = set(subparsers.choices)
        module.add_parser(subparsers)
        for added in set(subparsers.choices) - before:
            modules[added] = module
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pullweights`` script."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (``| head``). Point stdout at /dev/null so the interpreter's
        # final flush does not fail again, and end quietly.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 141


def _main(argv: Sequence[str] | None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handler = modules[args.command].run  # type: ignore[attr-defined]
    try:
        result = handler(args)
        if _inspect.isawaitable(result):
            result = asyncio.run(result)  # type: ignore[arg-type]
    except UsageError as exc:
        print(f"pullweights {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except PullWeightsError as exc:
        print(f"pullweights: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pullweights: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
