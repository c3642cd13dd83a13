"""The ``pullweights`` command line: ``run``, ``inspect``, ``pull`` and ``cache``.

Each subcommand lives in its own module with ``add_parser(subparsers)`` and
``run(args) -> int`` (sync or async); pullweights errors become one line on stderr and
exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect as _inspect
import sys
from collections.abc import Sequence

from pullweights.errors import PullWeightsError

__all__ = ["main"]

SUBCOMMANDS = ("run", "chat", "serve", "inspect", "pull", "cache", "profile", "bench", "export")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    """The top-level parser and the module behind each registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="pullweights",
        description="Load neural-network weights on demand and run models on onnxruntime.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
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
    except PullWeightsError as exc:
        print(f"pullweights: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pullweights: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
