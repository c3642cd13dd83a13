"""ByteBudget as worker slots: bounded holders, lowest priority admitted first, cancel-safe."""

from __future__ import annotations

import asyncio

import pytest

from pullweights.sources.budget import ByteBudget


async def test_waiters_are_admitted_lowest_priority_first() -> None:
    slots = ByteBudget(1)
    order: list[str] = []
    release = asyncio.Event()

    async def job(name: str, priority: int) -> None:
        async with slots.hold(1, priority):
            order.append(name)
            if name == "first":
                await release.wait()

    first = asyncio.ensure_future(job("first", 9))
    await asyncio.sleep(0)
    waiters = [asyncio.ensure_future(job(n, p)) for n, p in [("c", 5), ("a", 1), ("b", 1)]]
    await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(asyncio.gather(first, *waiters), 5)
    assert order == ["first", "a", "b", "c"]  # by priority, arrival order among equals


async def test_at_most_count_hold_at_once_and_a_cancelled_waiter_passes_its_turn() -> None:
    slots = ByteBudget(2)
    inside = 0
    most = 0

    async def job() -> None:
        nonlocal inside, most
        async with slots.hold(1):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    tasks = [asyncio.ensure_future(job()) for _ in range(8)]
    await asyncio.sleep(0)
    tasks[5].cancel()  # waiting: dropped from the queue
    done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
    assert most == 2
    assert isinstance(done[5], asyncio.CancelledError)
    # every slot came back: two more can hold at once
    async with slots.hold(1), slots.hold(1):
        pass
    assert slots.used == 0


async def test_a_waiter_granted_as_it_is_cancelled_hands_the_slot_on() -> None:
    slots = ByteBudget(1)
    entered = False

    async def waiter() -> None:
        nonlocal entered
        async with slots.hold(1):
            entered = True

    async with slots.hold(1):
        w = asyncio.ensure_future(waiter())
        await asyncio.sleep(0)  # w is waiting
    # leaving granted the slot to w, which has not run since: cancel it now
    w.cancel()
    with pytest.raises(asyncio.CancelledError):
        await w
    assert not entered
    assert slots.used == 0
