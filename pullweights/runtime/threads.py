"""Blocking work in worker threads that a cancelled load waits for.

``asyncio.to_thread`` returns at once when its task is cancelled while the thread runs
on; a load that was cancelled would then still be transforming a weight or creating a
session after ``cancel()`` returned. :func:`joined` runs the function in the default
executor and, when cancelled, first lets it finish (its result is dropped), so when a
cancelled load returns, none of its work is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
from collections.abc import Callable

__all__ = ["joined"]


async def joined[**P, T](fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` in a worker thread; on cancellation, wait for it to end."""
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    future = loop.run_in_executor(None, call)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        # Cancelled again while waiting (a shared pull is cancelled by each of its
        # waiters): keep waiting, or the thread would outlive the cancelled load.
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # retrieved: the result of cancelled work is dropped
        raise
