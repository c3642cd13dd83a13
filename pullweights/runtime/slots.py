"""Worker slots admitted by priority: the puller's bound on payloads pulled at once.

Stages ask for their weights as soon as each starts, in whatever order their first
steps finish; a plain semaphore would then pull them in that order. :class:`PrioritySlots`
admits the waiting pull of the lowest priority (the earliest stage) first, first come
first served among equals, so a load pulls in graph order however its stages start.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator

__all__ = ["PrioritySlots"]


class PrioritySlots:
    """At most ``count`` holders at once; waiters admitted lowest ``priority`` first."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        self._free = count
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrival = itertools.count()

    @contextlib.asynccontextmanager
    async def hold(self, priority: int = 0) -> AsyncIterator[None]:
        """Hold a slot for the ``async with`` body; cancellable while waiting."""
        await self._acquire(priority)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, priority: int) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._arrival), granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release()  # granted just as it was cancelled: pass the slot on
            raise  # a cancelled waiter stays in the heap and is skipped when reached

    def _release(self) -> None:
        while self._waiting:
            _, _, granted = heapq.heappop(self._waiting)
            if not granted.done():
                granted.set_result(None)
                return
        self._free += 1
