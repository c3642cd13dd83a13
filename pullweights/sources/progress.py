"""Progress of long transfers as small immutable events, and a tqdm bar that shows them.

Anything that moves many bytes (an HTTP source, the loader, ``pullweights pull``) reports
through a :class:`ProgressMeter`, which turns byte counts into at most ~10
:class:`ProgressEvent` per second for a callback. Callbacks run synchronously on the event
loop, so they must be quick; :class:`TqdmProgress` is a ready-made one::

    bar = TqdmProgress()
    async with await HttpSource.open(url, progress=bar) as source:
        await source.read_into(0, memoryview(buffer))
    bar.close()
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from tqdm import tqdm

__all__ = ["ProgressCallback", "ProgressEvent", "ProgressMeter", "TqdmProgress"]


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """A snapshot of one transfer.

    Attributes:
        what: what is being transferred (a URL, a file, a model name).
        bytes_done: bytes transferred so far.
        bytes_total: bytes asked for so far, or ``None`` when unknown.
        rate: recent transfer rate in bytes per second (0.0 before it can be measured).
        eta: seconds until ``bytes_total`` at ``rate``, or ``None`` when unknown.
        finished: nothing is outstanding any more (the last event of a transfer).
    """

    what: str
    bytes_done: int
    bytes_total: int | None
    rate: float
    eta: float | None
    finished: bool


#: A function called with each event, on the event loop thread; it must not block.
ProgressCallback = Callable[[ProgressEvent], object]


class ProgressMeter:
    """Counts bytes of one transfer and calls ``callback`` at most once per ``interval``.

    ``expect`` grows the total as work is asked for (a source learns its reads one by one),
    ``advance`` counts bytes as they arrive (negative to take back bytes that must be
    fetched again), and ``finish`` sends a final event with ``finished=True``. The rate is
    measured over the last ``window`` seconds.
    """

    def __init__(
        self,
        what: str,
        callback: ProgressCallback | None,
        *,
        total: int | None = None,
        interval: float = 0.1,
        window: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.callback = callback
        self.bytes_done = 0
        self.bytes_total = total
        self._interval = interval
        self._window = window
        self._clock = clock
        self._next_emit = 0.0
        self._samples: deque[tuple[float, int]] = deque()

    def expect(self, nbytes: int) -> None:
        """Add ``nbytes`` to the total (which becomes known if it was not)."""
        self.bytes_total = (self.bytes_total or 0) + nbytes

    def advance(self, nbytes: int) -> None:
        """Count ``nbytes`` more bytes done; emit an event if ``interval`` has passed."""
        self.bytes_done += nbytes
        if self.callback is None:
            return
        now = self._clock()
        if now >= self._next_emit:
            self._emit(now, finished=False)

    def finish(self) -> None:
        """Emit the final event of this transfer (``finished=True``), whatever the time."""
        if self.callback is not None:
            self._emit(self._clock(), finished=True)

    def _rate(self, now: float) -> float:
        samples = self._samples
        samples.append((now, self.bytes_done))
        while len(samples) > 2 and now - samples[1][0] >= self._window:
            samples.popleft()
        first_time, first_done = samples[0]
        elapsed = now - first_time
        return (self.bytes_done - first_done) / elapsed if elapsed > 0 else 0.0

    def _emit(self, now: float, *, finished: bool) -> None:
        assert self.callback is not None
        self._next_emit = now + self._interval
        rate = self._rate(now)
        eta: float | None = None
        if self.bytes_total is not None:
            remaining = max(self.bytes_total - self.bytes_done, 0)
            if remaining == 0:
                eta = 0.0
            elif rate > 0:
                eta = remaining / rate
        self.callback(
            ProgressEvent(self.what, self.bytes_done, self.bytes_total, rate, eta, finished)
        )


class TqdmProgress:
    """A :data:`ProgressCallback` drawing one tqdm bar (bytes, rate, ETA) per ``what``.

    A bar closes on its ``finished`` event; a later event for the same ``what`` opens a
    new one. Extra keyword arguments go to :class:`tqdm.tqdm` (``file``, ``leave``,
    ``disable``, ...).
    """

    def __init__(self, *, file: IO[str] | None = None, **tqdm_kwargs: Any) -> None:
        self._kwargs: dict[str, Any] = {
            "unit": "B",
            "unit_scale": True,
            "unit_divisor": 1024,
            "file": file,
            "dynamic_ncols": True,
            **tqdm_kwargs,
        }
        self._bars: dict[str, tqdm[Any]] = {}

    def __call__(self, event: ProgressEvent) -> None:
        bar = self._bars.get(event.what)
        if bar is None:
            label = event.what.rstrip("/").rsplit("/", 1)[-1] or event.what
            bar = tqdm(total=event.bytes_total, desc=label, **self._kwargs)
            self._bars[event.what] = bar
        if bar.total != event.bytes_total:
            bar.total = event.bytes_total
        bar.update(event.bytes_done - bar.n)
        if event.finished:
            bar.close()
            del self._bars[event.what]

    def close(self) -> None:
        """Close every bar still open (a transfer that failed or was cancelled)."""
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
