"""Memory samples of a process tree, one column per kind of memory.

A :class:`Samples` table holds, per sample, the time (``time.monotonic()`` seconds) and
the bytes of four kinds of memory summed over the profiled process and its descendants:

=========== ============================================================================
column      from ``/proc/<pid>/status`` (the same as in ``smaps_rollup``)
=========== ============================================================================
``rss``     ``VmRSS`` (``Rss``): every resident page (what ``top`` shows)
``private`` ``RssAnon`` (``Anonymous``): anonymous pages, which only swap can free
            (heap, copies)
``file``    ``rss - private`` (``RssFile + RssShmem``): file-backed and shared-memory
            pages (clean ones the kernel can drop at any time: a memory-mapped weight
            counts here)
``swap``    ``VmSwap`` (``Swap``): anonymous pages pushed out to swap
=========== ============================================================================

``processes`` counts the processes summed into the row.
"""

from __future__ import annotations

import bisect
from array import array
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["KINDS", "Kind", "Samples"]

Kind = Literal["rss", "private", "file", "swap"]
#: The memory columns, in the order they are drawn and listed.
KINDS: tuple[Kind, ...] = ("rss", "private", "file", "swap")


@dataclass
class Samples:
    """A growing table of samples (append-only; columns are compact arrays)."""

    time: array[float] = field(default_factory=lambda: array("d"))
    rss: array[int] = field(default_factory=lambda: array("q"))
    private: array[int] = field(default_factory=lambda: array("q"))
    file: array[int] = field(default_factory=lambda: array("q"))
    swap: array[int] = field(default_factory=lambda: array("q"))
    processes: array[int] = field(default_factory=lambda: array("q"))

    def __len__(self) -> int:
        return len(self.time)

    def append(self, t: float, rss: int, private: int, swap: int, processes: int) -> None:
        """Add one row (``file`` is derived: ``rss - private``)."""
        self.time.append(t)
        self.rss.append(rss)
        self.private.append(private)
        self.file.append(max(0, rss - private))
        self.swap.append(swap)
        self.processes.append(processes)

    def column(self, kind: Kind) -> array[int]:
        """The bytes of one kind of memory, one value per sample."""
        col: array[int] = getattr(self, kind)
        return col

    def peak_index(self, kind: Kind) -> int | None:
        """Index of the (first) highest sample of ``kind``; None without samples."""
        col = self.column(kind)
        if not col:
            return None
        return max(range(len(col)), key=col.__getitem__)

    def at(self, kind: Kind, t: float) -> int:
        """``kind`` at time ``t``: the last sample taken at or before ``t`` (the first
        sample for earlier times; 0 without samples)."""
        if not self.time:
            return 0
        i = bisect.bisect_right(self.time, t) - 1
        return self.column(kind)[max(i, 0)]

    def rate_hz(self) -> float:
        """Samples per second over the whole table (0 with fewer than two samples)."""
        if len(self.time) < 2 or self.time[-1] <= self.time[0]:
            return 0.0
        return (len(self.time) - 1) / (self.time[-1] - self.time[0])

    def to_json(self, origin: float) -> dict[str, Any]:
        """Columns as lists; times in seconds since ``origin``, rounded to 0.1 ms."""
        return {
            "time": [round(t - origin, 4) for t in self.time],
            **{kind: list(self.column(kind)) for kind in KINDS},
            "processes": list(self.processes),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any], origin: float) -> Samples:
        """Inverse of :meth:`to_json`.

        Raises:
            ValueError: missing or ragged columns.
        """
        try:
            times = [float(t) + origin for t in doc["time"]]
            columns = {k: [int(v) for v in doc[k]] for k in ("rss", "private", "swap")}
            procs = [int(v) for v in doc.get("processes", [1] * len(times))]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad samples: {exc}") from None
        if any(len(c) != len(times) for c in (*columns.values(), procs)):
            raise ValueError("bad samples: columns of different lengths")
        samples = cls()
        rows = zip(times, columns["rss"], columns["private"], columns["swap"], procs, strict=True)
        for row in rows:
            samples.append(*row)
        return samples
