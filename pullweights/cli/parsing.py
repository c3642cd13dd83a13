"""Argument parsing where options may stand anywhere, and checked numeric option types.

Every subcommand's parser is a :class:`CommandParser`: ``run MODEL --chat PROMPT`` and
``run --chat MODEL PROMPT`` parse the same (argparse's *intermixed* parsing: options are
taken out first, then the positionals are matched). A parser that has subcommands of its
own (``cache list|verify|...``) cannot be parsed that way and parses as argparse always
does.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

__all__ = ["CommandParser", "UsageError", "at_least", "number", "version_text"]


class CommandParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` that accepts options among its positionals."""

    _intermixing = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._intermixing or not self._can_intermix():
            return super().parse_known_args(args, namespace)
        # parse_known_intermixed_args calls parse_known_args twice (options, then
        # positionals): those calls take the plain path above.
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False

    def _can_intermix(self) -> bool:
        positionals = self._get_positional_actions()
        if any(a.nargs in (argparse.PARSER, argparse.REMAINDER) for a in positionals):
            return False
        return not any(
            a in positionals for g in self._mutually_exclusive_groups for a in g._group_actions
        )


def at_least(minimum: int, what: str = "") -> Callable[[str], int]:
    """An argparse ``type=`` for integers ``>= minimum``, with an error that says so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            hint = f" ({what})" if what else ""
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}{hint}")
        return value

    parse.__name__ = "int"
    return parse


class UsageError(Exception):
    """A command line that parses but means nothing runnable (a model name that names no
    model, a missing prompt); the CLI prints it as a usage error, exit status 2."""


def version_text() -> str:
    """``pullweights --version``: the package version and the runtime it uses."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("pullweights")
    except PackageNotFoundError:
        ours = "unknown (not installed)"
    try:
        ort = version("onnxruntime")
    except PackageNotFoundError:
        ort = "missing"
    return f"pullweights {ours} (onnxruntime {ort}, Python {platform.python_version()})"


def number(
    low: float | None = None, high: float | None = None, *, above: bool = False
) -> Callable[[str], float]:
    """An argparse ``type=`` for floats in ``[low, high]`` (``(low, high]`` with ``above``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        too_low = low is not None and (value <= low if above else value < low)
        if value != value or too_low or (high is not None and value > high):
            lo = "" if low is None else (f"> {low:g}" if above else f">= {low:g}")
            hi = "" if high is None else f"<= {high:g}"
            raise argparse.ArgumentTypeError(
                f"must be {' and '.join(x for x in (lo, hi) if x)}, got {text}"
            )
        return value

    parse.__name__ = "float"
    return parse
