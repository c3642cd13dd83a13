"""``profiled()``: sync and async blocks, events collected, failures and cancellation recorded."""

from __future__ import annotations

import asyncio

import pytest

from pullweights import events
from pullweights.events import Phase
from pullweights.profile import profiled


async def test_async_block_collects_events() -> None:
    async with profiled("async block") as prof:
        with events.span(Phase.TRANSFORM, "w", 1000):
            await asyncio.sleep(0.05)
        events.mark(Phase.READY)
    record = prof.record
    assert record.target == "async block" and record.status.ok
    assert [(s.phase, s.name, s.nbytes) for s in record.spans] == [(Phase.TRANSFORM, "w", 1000)]
    assert record.mark_time(Phase.READY) is not None
    assert len(record.samples) >= 1
    events.mark(Phase.READY)  # after the block: not collected
    assert len(record.events) == 3


def test_sync_block_failure_is_recorded() -> None:
    prof = profiled()
    with pytest.raises(KeyError), prof, events.span(Phase.FETCH, "x"):
        raise KeyError("boom")
    status = prof.record.status
    assert status.failed and not status.interrupted and "KeyError" in status.error
    (span,) = prof.record.spans
    assert not span.ok


async def test_cancelled_block_is_interrupted() -> None:
    holder = {}

    async def work() -> None:
        async with profiled() as prof:
            holder["prof"] = prof
            await asyncio.sleep(60)

    task = asyncio.create_task(work())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert holder["prof"].record.status.interrupted


def test_record_before_exit_and_reuse() -> None:
    prof = profiled()
    with pytest.raises(RuntimeError, match="once the profiled block has exited"):
        _ = prof.record
    with prof:
        pass
    with pytest.raises(RuntimeError, match="one block"), prof:
        pass
