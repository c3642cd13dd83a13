"""A background sampler of a process tree's memory (Linux ``/proc``), 100 samples a second.

What is read, and why ``/proc/<pid>/status`` rather than ``smaps_rollup``, is in
:mod:`pullweights.profile.procfs`.

Two ways to run, same samples (:mod:`pullweights.profile.procfs` reads them):

* ``"thread"``: a daemon thread of this process. Right when the profiled process is
  another one (``pullweights profile -- CMD``: this process only waits).
* ``"process"``: a small standard-library-only Python process, child of this one. Right
  when the profiled process is this one (:func:`pullweights.profile.profiled`): a
  thread would need this process's GIL for every sample, and a GIL-bound program holds
  it for 5 ms at a time (measured: a thread reached 13 Hz beside a pure-Python loop).
  The sampler process is left out of the sums.

Either stops on its own as soon as the profiled process has exited, and neither can
outlive the process that started it (a thread dies with it; the sampler process stops
at EOF of the pipe from it, which the kernel closes when it dies).
``benchmarks/bench_sampler.py`` measures the rate and the overhead.

Example::

    with Sampler(pid) as sampler:
        ...
    print(sampler.samples.rate_hz(), max(sampler.samples.private))
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Literal

from pullweights.profile import procfs
from pullweights.profile.samples import Samples

__all__ = ["DEFAULT_INTERVAL", "Mode", "Sampler"]

#: Seconds between samples (100 Hz).
DEFAULT_INTERVAL = 0.01
Mode = Literal["thread", "process"]
_PROCFS = Path(procfs.__file__)


class Sampler:
    """Samples the memory of ``pid`` (default: this process) and its descendants.

    Args:
        pid: the process to follow; it must exist when :meth:`start` is called.
        interval: seconds between samples (deadline-scheduled, no bursts after a stall).
        children: also sum every descendant process.
        rescan: seconds between searches for new descendants.
        mode: ``"thread"`` or ``"process"`` (see the module docs); default: a process
            for this process, a thread for another.
        source: ``"status"`` (the kernel's counters, cheap) or ``"smaps_rollup"`` (see
            :mod:`pullweights.profile.procfs`).

    Raises:
        ProcessLookupError: from :meth:`start`, when ``pid`` does not exist.
    """

    def __init__(
        self,
        pid: int | None = None,
        *,
        interval: float = DEFAULT_INTERVAL,
        children: bool = True,
        rescan: float = 0.05,
        mode: Mode | None = None,
        source: procfs.Source = "status",
    ) -> None:
        self.source: procfs.Source = source
        self.pid = os.getpid() if pid is None else pid
        self.interval = interval
        self.children = children
        self.rescan = rescan
        self.mode: Mode = mode or ("process" if self.pid == os.getpid() else "thread")
        self.samples = Samples()
        #: Set once sampling has ended (the profiled process exited, or :meth:`stop`).
        self.finished = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader: procfs.TreeReader | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._rows_path = ""

    @property
    def running(self) -> bool:
        """True while the sampling thread or process is alive."""
        if self._proc is not None:
            return self._proc.poll() is None
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Sampler:
        """Take a first sample now and keep sampling in the background."""
        if self.mode == "thread":
            self._reader = procfs.TreeReader(self.pid, children=self.children, source=self.source)
            self._reader.follow_children()
            self._append(self._reader.read(time.monotonic()))
            self._thread = threading.Thread(
                target=self._run, name="pullweights-sampler", daemon=True
            )
            self._thread.start()
        else:
            self._start_process()
        return self

    def _append(self, row: procfs.Row | None) -> None:
        if row is not None:
            self.samples.append(*row)

    def _run(self) -> None:
        assert self._reader is not None
        try:
            procfs.sample_loop(
                self._reader, self.interval, self.rescan, self._append, self._stop.wait
            )
        finally:
            self.finished.set()

    def _start_process(self) -> None:
        fd, self._rows_path = tempfile.mkstemp(prefix="pullweights-samples-")
        os.close(fd)
        argv = [
            sys.executable, "-S", "-I", str(_PROCFS), "--pid", str(self.pid),
            "--interval", str(self.interval), "--rescan", str(self.rescan),
            "--children", "1" if self.children else "0", "--source", self.source,
            "--out", self._rows_path,
        ]  # fmt: skip
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self._proc.stdout is not None
        ready = self._proc.stdout.read(1)  # after the first sample (or an exit)
        if not ready:
            code = self._proc.wait()
            self._cleanup_process()
            if code == 3:
                raise ProcessLookupError(f"no such process: {self.pid}")
            raise RuntimeError(f"the sampler process failed (exit status {code})")
        watcher = threading.Thread(target=self._watch, name="pullweights-sampler", daemon=True)
        watcher.start()
        self._thread = watcher

    def _watch(self) -> None:
        assert self._proc is not None
        self._proc.wait()
        self.finished.set()

    def _cleanup_process(self) -> None:
        if self._proc is not None:
            for pipe in (self._proc.stdin, self._proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        if self._rows_path:
            with contextlib.suppress(OSError):
                data = Path(self._rows_path).read_bytes()
                usable = len(data) - len(data) % procfs.ROW.size
                for row in procfs.ROW.iter_unpack(data[:usable]):
                    self._append(row)
            with contextlib.suppress(OSError):
                os.unlink(self._rows_path)
            self._rows_path = ""

    def stop(self) -> Samples:
        """Stop sampling (a last sample is taken if the process still lives), release
        every file and process; returns :attr:`samples`."""
        self._stop.set()
        if self._proc is not None:
            assert self._proc.stdin is not None
            with contextlib.suppress(OSError):
                self._proc.stdin.close()  # EOF: the sampler takes a last sample and exits
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._cleanup_process()
        if self._thread is not None:
            self._thread.join()
        if self._reader is not None:
            self._reader.close()
        self.finished.set()
        return self.samples

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
