"""Telling people, while it happens, that a transfer is retried or stalled.

Each report is one warning on the ``pullweights.sources.http`` logger (Python shows
warnings on stderr even without logging configured) and one load event
(:data:`~pullweights.events.Phase.RETRY` or :data:`~pullweights.events.Phase.STALL`),
so a progress bar, a profiler or user code can show it too.
"""

from __future__ import annotations

import asyncio
import logging

from pullweights import events
from pullweights.events import Phase

__all__ = ["StallWatch", "logger", "report_retry"]

logger = logging.getLogger("pullweights.sources.http")


def report_retry(where: str, attempt: int, reason: str, delay: float) -> None:
    """Report that attempt ``attempt`` of ``where`` failed and the next starts in ``delay``."""
    message = f"{where}: attempt {attempt} failed ({reason}); retrying in {delay:.1f} s"
    logger.warning("%s", message)
    events.mark(Phase.RETRY, message)


class StallWatch:
    """Reports a request that receives nothing, every ``interval`` seconds while it lasts.

    Call :meth:`data` whenever bytes arrive (the response headers count as data) and
    :meth:`stop` when the request ends. One timer per ``interval``, not per byte::

        watch = StallWatch(where, 10.0)
        try:
            ...  # watch.data() from the byte callback
        finally:
            watch.stop()
    """

    def __init__(self, where: str, interval: float | None, limit: float | None = None) -> None:
        self.where = where
        self.reports = 0
        self._interval = interval
        self._limit = limit
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()
        self._answered = False
        self._timer: asyncio.TimerHandle | None = None
        if interval is not None:
            self._timer = self._loop.call_at(self._last + interval, self._check)

    def answered(self) -> None:
        """The response headers arrived."""
        self._answered = True
        self.data()

    def data(self) -> None:
        """Bytes arrived just now."""
        self._last = self._loop.time()

    def _check(self) -> None:
        assert self._interval is not None
        now = self._loop.time()
        idle = now - self._last
        if idle >= self._interval * 0.999:
            self.reports += 1
            what = "no data" if self._answered else "no response"
            limit = "" if self._limit is None else f"; the attempt ends at {self._limit:g} s"
            message = f"{self.where}: {what} for {idle:.0f} s (stalled{limit})"
            logger.warning("%s", message)
            events.mark(Phase.STALL, message)
            next_check = now + self._interval  # again after another interval of silence
        else:
            next_check = self._last + self._interval
        self._timer = self._loop.call_at(next_check, self._check)

    def stop(self) -> None:
        """Stop watching (idempotent)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
