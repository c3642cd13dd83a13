"""Process memory as the kernel reports it: RSS, private (anonymous) memory, and peaks.

``VmHWM`` (from ``/proc/<pid>/status``) is the kernel's own peak RSS. The kernel keeps no
peak of anonymous memory, so :class:`MemoryMonitor` samples ``RssAnon`` from
``/proc/<pid>/status`` in a background thread: the same counter as ``Anonymous`` of
``smaps_rollup``, which is far dearer to read — it walks every page table under the mmap
lock, stalling the process's own page faults (3-20 ms a read once a loaded model has
~1000 mappings; see :mod:`pullweights.profile.procfs`). File-backed pages of a read-only
map are *not* anonymous even when only this process maps them, so a weight viewed from a
memory-mapped file never counts as private memory, while a copy of it always does.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from types import TracebackType

__all__ = ["MemoryMonitor", "MemorySnapshot", "snapshot"]


@dataclass(frozen=True)
class MemorySnapshot:
    """Memory of one process, in bytes."""

    rss: int
    anonymous: int
    peak_rss: int


def _read_kb(path: str, keys: tuple[str, ...]) -> dict[str, int]:
    values: dict[str, int] = {}
    with open(path, encoding="ascii") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in keys:
                values[name] = int(rest.split()[0]) * 1024
    return values


def snapshot(pid: int | str = "self") -> MemorySnapshot:
    """Current RSS, anonymous memory and peak RSS (VmHWM) of ``pid`` (Linux only)."""
    status = _read_kb(f"/proc/{pid}/status", ("VmRSS", "RssAnon", "VmHWM"))
    return MemorySnapshot(status["VmRSS"], status["RssAnon"], status["VmHWM"])


class MemoryMonitor:
    """Samples memory in a background thread; ``peak_anonymous`` is the highest seen.

    Example::

        with MemoryMonitor() as mon:
            await load_model()
        print(mon.peak_anonymous - mon.start.anonymous)
    """

    def __init__(self, interval: float = 0.01, pid: int | str = "self") -> None:
        self.interval = interval
        self.pid = pid
        self.start = snapshot(pid)
        self.peak_anonymous = self.start.anonymous
        self.peak_rss_sampled = self.start.rss
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> MemorySnapshot:
        """Take one sample now and fold it into the peaks."""
        snap = snapshot(self.pid)
        self.peak_anonymous = max(self.peak_anonymous, snap.anonymous)
        self.peak_rss_sampled = max(self.peak_rss_sampled, snap.rss)
        return snap

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except OSError:
                return

    def __enter__(self) -> MemoryMonitor:
        self._thread = threading.Thread(target=self._run, name="pullweights-memory", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> MemorySnapshot:
        """Stop sampling and return a last sample."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.sample()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def peak_rss(self) -> int:
        """Kernel-tracked peak RSS (VmHWM) of the whole process lifetime."""
        return snapshot(self.pid).peak_rss


def elapsed_since(start: float) -> float:
    """Seconds since ``start`` (a ``time.perf_counter()`` value)."""
    return time.perf_counter() - start
