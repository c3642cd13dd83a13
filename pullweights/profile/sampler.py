"""A background sampler of a process tree's memory (Linux ``/proc``), 100 samples a second.

Each sample reads ``/proc/<pid>/smaps_rollup`` of the profiled process and of every
descendant found so far, and sums ``Rss``, ``Anonymous`` and ``Swap`` (see
:mod:`pullweights.profile.samples` for what each column means). Descendants are found
through ``/proc/<pid>/task/<tid>/children`` every ``rescan`` seconds, so a child that lives
shorter than that may be missed.

The sampler is a daemon thread of the calling process: it can never outlive it, and it
stops on its own as soon as the profiled process has exited (its ``smaps_rollup`` reads
empty), so it never outlives that one either. Reading ``smaps_rollup`` makes the kernel
walk the process's page tables (~0.1 ms for 300 MiB resident, ~0.4 ms for 2 GiB, measured
here); ``benchmarks/bench_sampler.py`` measures the rate and the overhead.

Example::

    with Sampler(pid) as sampler:
        ...
    print(sampler.samples.rate_hz(), max(sampler.samples.private))
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from types import TracebackType

from pullweights.profile.samples import Samples

__all__ = ["DEFAULT_INTERVAL", "Sampler", "descendants", "read_rollup"]

#: Seconds between samples (100 Hz).
DEFAULT_INTERVAL = 0.01
_KB = 1024


def _field(data: bytes, key: bytes) -> int:
    start = data.find(key)
    if start < 0:
        return 0
    start += len(key)
    return int(data[start : data.index(b"k", start)]) * _KB


def read_rollup(fd: int) -> tuple[int, int, int] | None:
    """``(rss, anonymous, swap)`` bytes from an open ``smaps_rollup`` file descriptor;
    None when the process has exited (a zombie's or a dead process's file reads empty)."""
    try:
        data = os.pread(fd, 8192, 0)
    except OSError:  # ESRCH: the process is gone
        return None
    if not data:
        return None
    return _field(data, b"\nRss:"), _field(data, b"\nAnonymous:"), _field(data, b"\nSwap:")


def descendants(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (children of any of its threads, recursively)."""
    found: set[int] = set()
    stack = [pid]
    while stack:
        parent = stack.pop()
        try:
            tids = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{parent}/task/{tid}/children", "rb") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            for kid in kids:
                if kid not in found:
                    found.add(kid)
                    stack.append(kid)
    return found


def _open_rollup(pid: int) -> int | None:
    try:
        return os.open(f"/proc/{pid}/smaps_rollup", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


class Sampler:
    """Samples the memory of ``pid`` (default: this process) and its descendants.

    Args:
        pid: the process to follow; it must exist when :meth:`start` is called.
        interval: seconds between samples (deadline-scheduled, no bursts after a stall).
        children: also sum every descendant process.
        rescan: seconds between searches for new descendants.

    Raises:
        ProcessLookupError: from :meth:`start`, when ``pid`` has no ``smaps_rollup``.
    """

    def __init__(
        self,
        pid: int | None = None,
        *,
        interval: float = DEFAULT_INTERVAL,
        children: bool = True,
        rescan: float = 0.05,
    ) -> None:
        self.pid = os.getpid() if pid is None else pid
        self.interval = interval
        self.children = children
        self.rescan = rescan
        self.samples = Samples()
        #: Set once the profiled process has exited (or sampling stopped).
        self.finished = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fds: dict[int, int] = {}

    @property
    def running(self) -> bool:
        """True while the sampling thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Sampler:
        """Take a first sample now and start the thread."""
        fd = _open_rollup(self.pid)
        if fd is None:
            raise ProcessLookupError(f"no such process: {self.pid}")
        self._fds[self.pid] = fd
        self._sample(time.monotonic())
        self._thread = threading.Thread(target=self._run, name="pullweights-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Samples:
        """Stop sampling (a last sample is taken if the process still lives) and close
        every file; returns :attr:`samples`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._close()
        return self.samples

    def _close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def _sample(self, now: float) -> bool:
        """One row; False when the profiled process has exited."""
        main = read_rollup(self._fds[self.pid])
        if main is None:
            return False
        rss, anon, swap = main
        count = 1
        for pid, fd in list(self._fds.items()):
            if pid == self.pid:
                continue
            values = read_rollup(fd)
            if values is None:  # a descendant exited
                os.close(self._fds.pop(pid))
                continue
            rss, anon, swap, count = rss + values[0], anon + values[1], swap + values[2], count + 1
        self.samples.append(now, rss, anon, swap, count)
        return True

    def _follow_children(self) -> None:
        for pid in descendants(self.pid) - self._fds.keys():
            fd = _open_rollup(pid)
            if fd is not None:
                self._fds[pid] = fd

    def _run(self) -> None:
        deadline = time.monotonic()
        next_rescan = deadline
        try:
            while True:
                deadline += self.interval
                delay = deadline - time.monotonic()
                if delay < 0:  # fell behind (a stalled machine): restart the schedule
                    deadline, delay = time.monotonic(), 0.0
                stopping = self._stop.wait(delay)
                now = time.monotonic()
                if self.children and now >= next_rescan:
                    self._follow_children()
                    next_rescan = now + self.rescan
                if not self._sample(now) or stopping:
                    return
        finally:
            self.finished.set()

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
