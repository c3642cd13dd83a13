"""Byte sizes and ages as people write them: ``2G``, ``500MiB``, ``7d``."""

from __future__ import annotations

import re

__all__ = ["format_size", "parse_duration", "parse_size"]

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGTP]?)(?:I?B)?\s*$", re.IGNORECASE)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([smhdw]?)\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes in ``text``: a number with an optional binary unit (``K``, ``M``, ``G``, ``T``).

    ``2G``, ``2GB`` and ``2GiB`` all mean 2 * 1024**3 bytes (like ``du`` and ``df``).

    Raises:
        ValueError: ``text`` is not a size.
    """
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"size {text} is negative")
        return text
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size (examples: 1048576, 500M, 2G, 1.5GiB)")
    return int(float(match[1]) * _UNITS[match[2].upper()])


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number with an optional unit ``s``, ``m``, ``h``, ``d``, ``w``.

    Raises:
        ValueError: ``text`` is not a duration.
    """
    match = _DURATION_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (examples: 90s, 30m, 12h, 7d, 2w)")
    return float(match[1]) * _SECONDS[match[2].lower() or "s"]


def format_size(nbytes: int) -> str:
    """``nbytes`` in the largest binary unit that keeps the number >= 1: ``1.5 GiB``."""
    if nbytes < 1024:
        return f"{nbytes} B"
    units = ("KiB", "MiB", "GiB", "TiB", "PiB")
    power = min(len(units), (nbytes.bit_length() - 1) // 10)
    return f"{nbytes / (1 << (10 * power)):.1f} {units[power - 1]}"
