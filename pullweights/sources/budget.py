"""A cap on what is in flight — bytes requested but not yet delivered, or worker slots —
across concurrent tasks, admitted by priority."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["ByteBudget"]


class ByteBudget:
    """At most ``limit`` bytes held at once; waiters are admitted lowest ``priority``
    first, first come first served among equals.

    A request larger than ``limit`` is let through alone, so nothing waits forever.
    A task cancelled while it waits takes nothing and blocks no one::

        budget = ByteBudget(64 << 20)
        async with budget.hold(len(view)):
            await fetch_into(view)

    Holding 1 of ``ByteBudget(n)`` is a slot among ``n`` (the weight puller's workers).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        # (priority, arrival, nbytes, waiter); a cancelled waiter stays until it is first
        self._waiters: list[tuple[int, int, int, asyncio.Future[None]]] = []
        self._arrival = itertools.count()

    @asynccontextmanager
    async def hold(self, nbytes: int, priority: int = 0) -> AsyncIterator[None]:
        """Wait until ``nbytes`` fit (after every waiter of a lower ``priority``, and
        those of the same one that came first), hold them for the ``async with`` block."""
        await self._acquire(nbytes, priority)
        try:
            yield
        finally:
            self._release(nbytes)

    async def _acquire(self, nbytes: int, priority: int = 0) -> None:
        if not self._waiters and self._fits(nbytes):
            self.used += nbytes
            return
        waiter = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._arrival), nbytes, waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(nbytes)  # granted just as we were cancelled
            else:
                self._wake()  # it may have been first, holding back the others
            raise

    def _fits(self, nbytes: int) -> bool:
        return self.used == 0 or self.used + nbytes <= self.limit

    def _release(self, nbytes: int) -> None:
        self.used -= nbytes
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            _, _, nbytes, waiter = self._waiters[0]
            if not waiter.done():  # a cancelled waiter leaves without bytes
                if not self._fits(nbytes):
                    return
                self.used += nbytes
                waiter.set_result(None)
            heapq.heappop(self._waiters)
