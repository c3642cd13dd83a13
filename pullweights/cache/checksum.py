"""Checksums of the cache's bytes: CRC-32C in hardware, and a memo of files checked.

Every file of a cache entry or saved session is checksummed when it is written and
verified before a runtime sees it. CRC-32C (the ``crc32c`` package: SSE 4.2 / ARMv8 CRC
instructions, GIL released) runs at ~4.8x ``zlib.crc32`` here (8.7 vs 1.8 GB/s on a busy
2-core machine; ``python benchmarks/bench_cache_integrity.py``); unlike ``google-crc32c``
it accepts a memory map without copying it. It catches torn, flipped
or zeroed bytes, not deliberate tampering: content keys (:mod:`~pullweights.cache.index`)
use SHA-256.

A file verified once is not re-read by the same process while its inode, size, mtime
and ctime stay the same (any write changes them), so a second load in one process, or
a file shared by several entries, costs one ``fstat``; across processes the same holds
per entry through :mod:`.stamps`.
"""

from __future__ import annotations

import json
import mmap
import os
import threading
from collections.abc import Mapping
from typing import Any

import crc32c
import numpy as np

__all__ = [
    "ALGORITHM",
    "RunningChecksum",
    "checksum",
    "checksum_fd",
    "forget",
    "remember",
    "seal",
    "unseal",
    "verify_fd",
]

#: Tag of every checksum this version writes: ``crc32c:1c291ca3``.
ALGORITHM = "crc32c"
#: Bytes per call: small enough to bound a call, large enough to amortize it.
_BLOCK = 64 << 20

_StatKey = tuple[int, int, int, int, int]
_lock = threading.Lock()
_verified: dict[_StatKey, str] = {}


class RunningChecksum:
    """The checksum of bytes seen piece by piece, in order (the same value as
    :func:`checksum` of their concatenation)."""

    __slots__ = ("_crc",)

    def __init__(self) -> None:
        self._crc = 0

    def update(self, data: mmap.mmap | np.ndarray | bytes | memoryview) -> None:
        """Add the next bytes."""
        with memoryview(data) as view, view.cast("B") as flat:
            for start in range(0, len(flat), _BLOCK):
                self._crc = crc32c.crc32c(flat[start : start + _BLOCK], self._crc)

    @property
    def value(self) -> str:
        """The tagged checksum, e.g. ``crc32c:1c291ca3``."""
        return f"{ALGORITHM}:{self._crc:08x}"


def checksum(data: mmap.mmap | np.ndarray | bytes | memoryview) -> str:
    """Checksum of a buffer's bytes, tagged with its algorithm: ``crc32c:1c291ca3``."""
    running = RunningChecksum()
    running.update(data)
    return running.value


def _stat_key(st: os.stat_result) -> _StatKey:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def checksum_fd(fd: int) -> str:
    """Checksum of the whole file open as ``fd`` (mapped, never copied)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return checksum(b"")
    with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as mm:
        return checksum(mm)


def verify_fd(fd: int, expected: str) -> str | None:
    """None if the file open as ``fd`` has checksum ``expected``, else its checksum.

    A match is remembered (see the module docs) so the same file is not read again.
    """
    key = _stat_key(os.fstat(fd))
    with _lock:
        if _verified.get(key) == expected:
            return None
    actual = checksum_fd(fd)
    if actual != expected:
        return actual
    with _lock:
        _verified[key] = expected
    return None


def remember(fd: int, value: str) -> None:
    """Record that the file open as ``fd`` has checksum ``value`` (its writer computed it)."""
    key = _stat_key(os.fstat(fd))
    with _lock:
        _verified[key] = value


def forget() -> None:
    """Forget every file verified so far (the next load reads them all again)."""
    with _lock:
        _verified.clear()


def _canonical(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def seal(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with a ``"checksum"`` of its canonical JSON added (a record that checks
    itself: any flipped byte of the file is found)."""
    return {**doc, "checksum": checksum(_canonical(doc))}


def unseal(doc: Any) -> dict[str, Any]:
    """``doc`` without its ``"checksum"``, which must match.

    Raises:
        ValueError: ``doc`` is not a sealed JSON object, or its checksum does not match.
    """
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    body = dict(doc)
    claimed = body.pop("checksum", None)
    if claimed != checksum(_canonical(body)):
        raise ValueError("the record does not match its own checksum")
    return body
