"""How large an allocation may be: checked *before* numpy (or onnxruntime) is asked.

A size computed from a hostile file or a mistaken argument (``shape=(2**32, 2**32)``, a
context length of 2**40) must end in one typed error, not an overflow that wraps to a
small number, a ``MemoryError`` half-way through, or the kernel's OOM killer. Every size
is a Python int (no wrap-around), must fit in int64 (numpy's and onnxruntime's index
type), and a single allocation must fit in :func:`memory_limit`.
"""

from __future__ import annotations

import contextlib
import os
import resource
from functools import cache
from pathlib import Path

from pullweights.errors import PullWeightsError

__all__ = ["INT64_MAX", "check_allocation", "check_int64", "memory_limit"]

INT64_MAX = 2**63 - 1

#: Environment variable overriding :func:`memory_limit` (bytes).
LIMIT_VARIABLE = "PULLWEIGHTS_MAX_ALLOCATION"


@cache
def memory_limit() -> int:
    """The largest single allocation allowed: the physical memory, or less when the
    process has a smaller address-space limit or cgroup memory limit (or
    ``$PULLWEIGHTS_MAX_ALLOCATION`` bytes when set)."""
    override = os.environ.get(LIMIT_VARIABLE)
    if override:
        try:
            return max(int(override), 0)
        except ValueError:
            pass
    limits = [INT64_MAX]
    with contextlib.suppress(ValueError, OSError, AttributeError):
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limits.append(soft)
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text.isdigit():
            limits.append(int(text))
    except OSError:
        pass
    return min(limits)


def check_int64(value: int, what: str, error: type[PullWeightsError]) -> int:
    """``value`` if it is a non-negative int that fits in int64, else ``error``."""
    if value < 0 or value > INT64_MAX:
        raise error(f"{what} is {value}: it must lie in [0, 2**63)")
    return value


def check_allocation(nbytes: int, what: str, error: type[PullWeightsError]) -> None:
    """Raise ``error`` unless ``nbytes`` fits in int64 and in :func:`memory_limit`."""
    check_int64(nbytes, f"{what}: the byte size", error)
    limit = memory_limit()
    if nbytes > limit:
        raise error(
            f"{what} needs {nbytes} bytes, more than the {limit} bytes one allocation may "
            f"take (physical memory or the process's limits; ${LIMIT_VARIABLE} overrides)"
        )
