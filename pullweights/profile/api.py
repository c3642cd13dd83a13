"""Profile a block of this process: ``async with profiled() as prof: ...``.

While the block runs, a :class:`~pullweights.profile.sampler.Sampler` thread samples this
process (and its children) and every :mod:`pullweights.events` event is collected; on
exit ``prof.record`` is the :class:`~pullweights.profile.record.ProfileRecord`, also
when the block raised (``status.failed``) or was interrupted or cancelled
(``status.interrupted``) — the exception still propagates.

Example::

    import pullweights.profile

    async with pullweights.profile.profiled("my graph") as prof:
        graph = await builder.build(outputs)
        await graph.compute(inputs)
    prof.record.write_json("profile.json")
    prof.record.write_markdown("profile.md")
    prof.record.plot("profile.png")

The same object works as a plain ``with`` block in synchronous code.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from types import TracebackType

from pullweights import events
from pullweights.events import Event
from pullweights.profile.record import ProfileRecord, ProfileStatus, run_metadata
from pullweights.profile.sampler import DEFAULT_INTERVAL, Sampler

__all__ = ["Profiler", "profiled"]


class Profiler:
    """Context manager (sync and async) that profiles the block it wraps.

    Args:
        target: what the record says was profiled.
        interval: seconds between memory samples.
        children: also sample the memory of child processes.
    """

    def __init__(
        self,
        target: str = "profiled block",
        *,
        interval: float = DEFAULT_INTERVAL,
        children: bool = True,
    ) -> None:
        self.target = target
        self.interval = interval
        self.children = children
        self._record: ProfileRecord | None = None
        self._events: list[Event] = []
        self._sampler: Sampler | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._origin = 0.0

    @property
    def record(self) -> ProfileRecord:
        """The record, once the block has exited.

        Raises:
            RuntimeError: the block has not exited yet.
        """
        if self._record is None:
            raise RuntimeError("the profile record exists once the profiled block has exited")
        return self._record

    def __enter__(self) -> Profiler:
        if self._sampler is not None:
            raise RuntimeError("a Profiler profiles one block; create another")
        self._events = []
        self._unsubscribe = events.subscribe(self._events.append)
        self._origin = time.monotonic()
        self._sampler = Sampler(interval=self.interval, children=self.children).start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._sampler is not None and self._unsubscribe is not None
        samples = self._sampler.stop()
        end = time.monotonic()
        self._unsubscribe()
        status = ProfileStatus()
        if exc is not None:
            status.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
                status.interrupted = True
            else:
                status.failed = True
        self._record = ProfileRecord(
            target=self.target,
            origin=self._origin,
            end=end,
            samples=samples,
            events=list(self._events),
            status=status,
            metadata=run_metadata(
                pid=os.getpid(), sampler_interval_s=self.interval, in_process=True
            ),
        )

    async def __aenter__(self) -> Profiler:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def profiled(
    target: str = "profiled block", *, interval: float = DEFAULT_INTERVAL, children: bool = True
) -> Profiler:
    """A :class:`Profiler` for one block (``with`` or ``async with``)."""
    return Profiler(target, interval=interval, children=children)
