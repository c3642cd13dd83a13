"""Profile any command: run it as a child, sample its process tree, collect its events.

The child runs with ``PULLWEIGHTS_EVENTS`` naming a temporary file, so every pullweights
event of it (and of its own children) is appended there as a JSON line; the file is read
once the child has exited. The sampler is a thread of this process that follows the
child and its descendants and stops as soon as the child has exited.

How the run ended goes into the record's status: the exit status (``128 + N`` after
signal N, the shell's convention), ``failed`` for a non-zero status or a command that
cannot be started (status 127), ``interrupted`` when this process got Ctrl-C (SIGINT) or
SIGTERM. On Ctrl-C the child, in the same process group, normally gets the SIGINT from
the terminal itself; if it has not exited after a second it is sent SIGINT, then SIGTERM
and finally SIGKILL, ``grace`` seconds apart (each further Ctrl-C skips to the next
step). SIGTERM is passed on to the child at once, then SIGKILL after ``grace`` seconds.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

from pullweights.events import ENV_EVENTS, Event
from pullweights.profile.record import ProfileRecord, ProfileStatus, run_metadata
from pullweights.profile.sampler import DEFAULT_INTERVAL, Sampler
from pullweights.profile.samples import Samples

__all__ = ["profile_command", "read_events"]

#: Seconds a child gets to exit on its own after Ctrl-C before it is sent SIGINT.
FIRST_WAIT = 1.0


def read_events(path: str | os.PathLike[str]) -> tuple[list[Event], int]:
    """The events of a ``PULLWEIGHTS_EVENTS`` file and the number of unreadable lines (a
    process killed mid-write leaves a partial last line)."""
    found: list[Event] = []
    bad = 0
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return found, 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            found.append(Event.from_json(line))
        except ValueError:
            bad += 1
    return found, bad


class _Waiter:
    """Reaps the child; after Ctrl-C or SIGTERM escalates on a schedule.

    The signal handlers never raise: they record what arrived and start (or hurry) an
    escalation thread, while the main thread stays blocked in ``wait4`` (no polling), so
    an interrupt at any moment between starting the child and reaping it is handled the
    same way. Signals go through a pidfd, so a reaped child's pid, reused, is never hit.
    """

    def __init__(self, proc: subprocess.Popen[Any], grace: float) -> None:
        self.proc = proc
        self.grace = grace
        #: The first signal that interrupted the run ("SIGINT", "SIGTERM"), or "".
        self.interrupted = ""
        self._pidfd = os.pidfd_open(proc.pid)
        self._hurry = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()  # no signal through a closed (or reused) pidfd

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        if self.interrupted:
            self._hurry.set()  # asked again: the next, harsher step now
            return
        self.interrupted = sig.name
        if sig == signal.SIGTERM:
            steps = [(0.0, signal.SIGTERM), (self.grace, signal.SIGKILL)]
        else:  # the terminal's SIGINT reached the child too: give it a moment first
            steps = [
                (FIRST_WAIT, signal.SIGINT),
                (self.grace, signal.SIGTERM),
                (self.grace, signal.SIGKILL),
            ]
        threading.Thread(
            target=self._escalate, args=(steps,), name="pullweights-profile-escalate", daemon=True
        ).start()

    def _escalate(self, steps: list[tuple[float, signal.Signals]]) -> None:
        for delay, sig in steps:
            if delay:
                self._hurry.wait(delay)
                self._hurry.clear()
            with self._lock:
                if self._done.is_set():
                    return
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(self._pidfd, sig)

    def wait(self) -> tuple[int, Any]:
        """``(wait status, rusage)`` of the child, however long it takes."""
        try:
            _, status, rusage = os.wait4(self.proc.pid, 0)  # retried after each handler
        finally:
            with self._lock:
                self._done.set()
                os.close(self._pidfd)
            self._hurry.set()
        return status, rusage


def profile_command(
    argv: Sequence[str],
    *,
    target: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    interval: float = DEFAULT_INTERVAL,
    grace: float = 5.0,
) -> ProfileRecord:
    """Run ``argv`` as a child process and return its profile record.

    Never raises for the command's own failure: a non-zero exit, a signal, Ctrl-C or a
    command that cannot be started are all recorded in ``record.status``.

    Args:
        argv: the command and its arguments.
        target: what the record says was profiled (default: the command line).
        env: the child's environment (default: this process's), plus ``PULLWEIGHTS_EVENTS``.
        cwd, stdout, stderr: as for :class:`subprocess.Popen` (default: inherited).
        interval: seconds between memory samples.
        grace: seconds between the escalating signals after Ctrl-C.
    """
    command = shlex.join(argv)
    fd, events_path = tempfile.mkstemp(prefix="pullweights-events-", suffix=".jsonl")
    os.close(fd)
    child_env = {**(os.environ if env is None else env), ENV_EVENTS: events_path}
    status = ProfileStatus()
    metadata = run_metadata(command=list(argv), sampler_interval_s=interval)
    origin = time.monotonic()
    try:
        try:
            proc = subprocess.Popen(
                list(argv), env=child_env, cwd=cwd, stdout=stdout, stderr=stderr
            )
        except OSError as exc:
            status.failed, status.exit_code = True, 127
            status.error = f"cannot run {argv[0] if argv else '(nothing)'!r}: {exc.strerror or exc}"
            return ProfileRecord(
                target or command,
                origin,
                time.monotonic(),
                Samples(),
                status=status,
                metadata=metadata,
            )
        metadata["pid"] = proc.pid
        waiter = _Waiter(proc, grace)
        handled = (signal.SIGINT, signal.SIGTERM)
        main_thread = threading.current_thread() is threading.main_thread()
        previous = [signal.signal(s, waiter.on_signal) for s in handled] if main_thread else []
        sampler = Sampler(proc.pid, interval=interval)
        try:
            with contextlib.suppress(ProcessLookupError):  # /proc hidden: no samples
                sampler.start()
            wait_status, rusage = waiter.wait()
        finally:
            samples = sampler.stop()
            for sig, handler in zip(handled, previous, strict=False):
                signal.signal(sig, handler)
        end = time.monotonic()
        code = os.waitstatus_to_exitcode(wait_status)
        proc.returncode = code  # reaped by wait4: tell Popen
        if code < 0:
            status.signal = -code
            status.exit_code = 128 - code
            status.error = f"killed by {signal.Signals(-code).name}"
        else:
            status.exit_code = code
        if waiter.interrupted:
            status.interrupted = True
            received = f"{waiter.interrupted} received"
            status.error = f"{received}; {status.error}" if status.error else received
        status.failed = status.exit_code != 0 and not status.interrupted
        metadata["kernel_peak_rss"] = int(rusage.ru_maxrss) * 1024
        metadata["child_cpu_s"] = round(rusage.ru_utime + rusage.ru_stime, 3)
        found, bad = read_events(events_path)
        if bad:
            metadata["unreadable_event_lines"] = bad
        return ProfileRecord(target or command, origin, end, samples, found, status, metadata)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(events_path)
