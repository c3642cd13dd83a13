"""A cap on bytes in flight: requested but not yet delivered, across concurrent tasks."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

__all__ = ["ByteBudget"]


class ByteBudget:
    """At most ``limit`` bytes held at once; first come, first served.

    A request larger than ``limit`` is let through alone, so nothing waits forever.
    A task cancelled while it waits takes nothing and blocks no one::

        budget = ByteBudget(64 << 20)
        async with budget.hold(len(view)):
            await fetch_into(view)
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @asynccontextmanager
    async def hold(self, nbytes: int) -> AsyncIterator[None]:
        """Wait until ``nbytes`` fit, hold them for the ``async with`` block."""
        await self._acquire(nbytes)
        try:
            yield
        finally:
            self._release(nbytes)

    async def _acquire(self, nbytes: int) -> None:
        if not self._waiters and self._fits(nbytes):
            self.used += nbytes
            return
        waiter = asyncio.get_running_loop().create_future()
        entry = (nbytes, waiter)
        self._waiters.append(entry)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(nbytes)  # granted just as we were cancelled
            else:
                with suppress(ValueError):
                    self._waiters.remove(entry)
                self._wake()
            raise

    def _fits(self, nbytes: int) -> bool:
        return self.used == 0 or self.used + nbytes <= self.limit

    def _release(self, nbytes: int) -> None:
        self.used -= nbytes
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            nbytes, waiter = self._waiters[0]
            if not waiter.done():  # a cancelled waiter leaves without bytes
                if not self._fits(nbytes):
                    return
                self.used += nbytes
                waiter.set_result(None)
            self._waiters.popleft()
