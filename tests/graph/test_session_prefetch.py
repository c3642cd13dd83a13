"""Saved sessions opened before the graph exists (:mod:`pullweights.runtime.prefetch`).

A build records the saved sessions it used as the plan of its plan key; the next build
with that key opens them while it is being built and its stages take them. A missing,
damaged or stale plan, or an open that fails, costs only the head start: the results are
those of a build without a prefetch (compared bit for bit), and nothing of the prefetch
(threads, sessions) outlives its ``finish``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import pullweights.runtime.prefetch as prefetch_module
from pullweights.cache import WeightCache
from pullweights.cache.blobs import blob_key, blob_path
from pullweights.cache.plans import KIND, PlannedSession, SessionPlans
from pullweights.errors import GraphError
from pullweights.runtime.context import Context
from pullweights.runtime.graph import Graph
from pullweights.runtime.prefetch import SessionPrefetch, _HeapBudget

from . import test_session_cache as session_cache
from .test_session_cache import DIM, Q, context, run, write_gguf

PLAN = "test-plan"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three matrices of over 1 MiB packed each: three saved stages."""
    path = tmp_path_factory.mktemp("gguf") / "model.gguf"
    write_gguf(path, 0, shapes=[(Q.Q8_0, DIM, DIM), (Q.Q4_0, DIM, DIM), (Q.Q8_0, DIM, DIM)])
    return path


async def build(
    ctx: Context, path: Path, prefetch: SessionPrefetch | None, stages: int = 3
) -> Graph:
    """``relu(x @ W^T)`` through the model's matrices, one stage each (or ``stages``)."""
    return await session_cache.build(ctx, path, stages=stages, prefetch=prefetch)


async def prefetched_build(
    ctx: Context, path: Path, stages: int = 3
) -> tuple[Graph, SessionPrefetch]:
    """A build as ``load_model`` makes it: prefetch started and checked first."""
    prefetch = SessionPrefetch.start(ctx, PLAN)
    assert prefetch is not None
    try:
        await prefetch.checked()
        graph = await build(ctx, path, prefetch, stages)
    finally:
        await prefetch.finish()
    return graph, prefetch


def prefetch_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("pullweights-prefetch")]


def plan(cache_dir: Path) -> list[PlannedSession] | None:
    return SessionPlans(cache_dir).get(PLAN)


async def test_a_second_build_takes_the_sessions_opened_before_it(
    tmp_path: Path, model: Path
) -> None:
    cold, _ = await prefetched_build(context(tmp_path), model)
    expected = await run(cold)
    recorded = plan(tmp_path)
    assert recorded is not None and len(recorded) == 3 == len(cold.stages)
    assert [p.stage for p in recorded] == [s.lowered.name for s in cold.stages]
    assert cold.prefetched == 0
    warm, prefetch = await prefetched_build(context(tmp_path), model)
    assert warm.prefetched == 3 and warm.from_saved_session
    np.testing.assert_array_equal(await run(warm), expected)
    assert plan(tmp_path) == recorded and prefetch.planned == recorded
    assert prefetch_threads() == []
    # The same build without a prefetch: identical results.
    plain = await build(context(tmp_path), model, None)
    assert plain.prefetched == 0
    np.testing.assert_array_equal(await run(plain), expected)


async def test_a_plan_of_one_session_is_not_prefetched(tmp_path: Path, model: Path) -> None:
    cold, _ = await prefetched_build(context(tmp_path), model, stages=1)
    recorded = plan(tmp_path)
    assert recorded is not None and len(recorded) == 1
    warm, _ = await prefetched_build(context(tmp_path), model, stages=1)
    assert warm.prefetched == 0 and warm.from_saved_session
    np.testing.assert_array_equal(await run(warm), await run(cold))
    assert plan(tmp_path) == recorded and prefetch_threads() == []


@pytest.mark.parametrize("plan_damage", ["stale-keys", "garbage", "other-model"])
async def test_a_stale_or_damaged_plan_costs_only_the_head_start(
    tmp_path: Path, model: Path, plan_damage: str
) -> None:
    cold, _ = await prefetched_build(context(tmp_path), model)
    expected = await run(cold)
    recorded = plan(tmp_path)
    assert recorded is not None
    store = SessionPlans(tmp_path)
    if plan_damage == "stale-keys":  # one key that is not there, and the order reversed
        gone = PlannedSession("0" * 40, "gone", 1 << 20, 1 << 20)
        store.put(PLAN, [gone, *reversed(recorded[1:])])
    elif plan_damage == "garbage":
        blob_path(tmp_path, KIND, blob_key(PLAN)).write_bytes(b"\x00not a blob")
    else:  # the plan of another model: none of its keys are this one's
        other = tmp_path / "other.gguf"
        write_gguf(other, 0, seed=7, shapes=[(Q.Q8_0, DIM, DIM)] * 3)
        await build(context(tmp_path), other, None)
        ctx = context(tmp_path)
        other_plan = SessionPrefetch.start(ctx, PLAN)
        assert other_plan is not None
        try:
            await build(ctx, other, other_plan)
        finally:
            await other_plan.finish()
    warm, _ = await prefetched_build(context(tmp_path), model)
    np.testing.assert_array_equal(await run(warm), expected)
    assert warm.from_saved_session
    assert warm.prefetched == {"stale-keys": 2, "garbage": 0, "other-model": 0}[plan_damage]
    assert plan(tmp_path) == recorded  # rewritten to what the build used
    assert prefetch_threads() == []


async def test_an_open_that_fails_is_left_to_its_stage(
    tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cold, _ = await prefetched_build(context(tmp_path), model)
    expected = await run(cold)

    class Refused:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("refused")

    # onnxruntime as the prefetch sees it (the stages' own opens are not touched)
    monkeypatch.setattr(prefetch_module, "ort", SimpleNamespace(InferenceSession=Refused))
    warm, _ = await prefetched_build(context(tmp_path), model)
    monkeypatch.undo()
    assert warm.prefetched == 0 and warm.from_saved_session
    np.testing.assert_array_equal(await run(warm), expected)
    assert len(WeightCache(tmp_path).entries()) > 0  # nothing was removed as broken
    assert plan(tmp_path) is not None


async def test_a_prefetch_nobody_takes_is_closed_with_its_threads(
    tmp_path: Path, model: Path
) -> None:
    await prefetched_build(context(tmp_path), model)
    recorded = plan(tmp_path)
    prefetch = SessionPrefetch.start(context(tmp_path), PLAN)
    assert prefetch is not None
    await prefetch.checked()
    await prefetch.finish(remember=False)
    await prefetch.finish()  # once only
    assert prefetch_threads() == []
    assert plan(tmp_path) == recorded


async def test_a_cancelled_build_ends_its_prefetch(tmp_path: Path, model: Path) -> None:
    cold, _ = await prefetched_build(context(tmp_path), model)
    expected = await run(cold)
    ctx = context(tmp_path)
    prefetch = SessionPrefetch.start(ctx, PLAN)
    assert prefetch is not None
    task = asyncio.ensure_future(build(ctx, model, prefetch))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await prefetch.finish(remember=False)
    assert prefetch_threads() == []
    again, _ = await prefetched_build(context(tmp_path), model)
    np.testing.assert_array_equal(await run(again), expected)


def test_no_prefetch_where_sessions_are_not_saved(tmp_path: Path) -> None:
    assert SessionPrefetch.start(context(None), PLAN) is None
    assert SessionPrefetch.start(context(tmp_path, session_cache=False), PLAN) is None
    assert SessionPrefetch.start(context(tmp_path), "") is None


async def test_a_prefetch_of_another_context_is_refused(tmp_path: Path, model: Path) -> None:
    prefetch = SessionPrefetch.start(context(tmp_path), PLAN)
    assert prefetch is not None
    try:
        with pytest.raises(GraphError, match="SessionPrefetch started on this context"):
            await build(context(tmp_path), model, prefetch)
    finally:
        await prefetch.finish(remember=False)


def test_plans_round_trip_and_the_oldest_go_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pullweights.cache.plans as plans

    monkeypatch.setattr(plans, "MAX_PLANS", 3)
    store = SessionPlans(tmp_path)
    sessions = [PlannedSession(f"{i:040x}", f"stage {i}", 1 << 20, 1 << 19) for i in range(3)]
    for i in range(5):
        store.put(f"plan {i}", sessions[: i % 3 + 1])
        time.sleep(0.01)  # distinct mtimes
    assert store.get("plan 0") is None and store.get("plan 1") is None
    assert store.get("plan 4") == sessions[:2]
    assert store.get("never written") is None


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b'{"sessions": [{"key": "not hex", "stage": "", "nbytes": 1, "largest": 1}]}',
        b'{"sessions": [{"key": 1}]}',
        b"[]",
    ],
)
def test_a_plan_that_does_not_parse_reads_as_none(tmp_path: Path, body: bytes) -> None:
    from pullweights.cache.blobs import write_blob

    assert write_blob(tmp_path, KIND, blob_key(PLAN), body)
    assert SessionPlans(tmp_path).get(PLAN) is None


def test_the_heap_budget_bounds_what_threads_hold_at_once() -> None:
    budget = _HeapBudget(100)
    held: list[int] = []
    peak = [0]
    lock = threading.Lock()

    def hold(nbytes: int) -> None:
        with budget.hold(nbytes):
            with lock:
                held.append(nbytes)
                peak[0] = max(peak[0], sum(held))
            time.sleep(0.02)
            with lock:
                held.remove(nbytes)

    threads = [threading.Thread(target=hold, args=(n,)) for n in (60, 60, 30, 30, 250)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads)
    assert peak[0] == 250  # larger than the limit: alone, never beside another
    assert budget.used == 0
