"""``joined``: a cancelled caller returns only after its worker thread has ended."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from pullweights.runtime.threads import joined


async def test_cancelled_twice_still_waits_for_the_thread() -> None:
    started, release, ended = threading.Event(), threading.Event(), threading.Event()

    def work() -> int:
        started.set()
        release.wait(10)
        ended.set()
        return 1

    task = asyncio.ensure_future(joined(work))
    await asyncio.to_thread(started.wait, 10)
    task.cancel()
    await asyncio.sleep(0.01)
    task.cancel()  # a shared pull is cancelled by each of its waiters
    await asyncio.sleep(0.01)
    assert not task.done()  # still waiting for the thread
    release.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert task.cancelled()
    assert ended.is_set()
