"""build() is awaitable and cancellable: weights are pulled while the session compiles, and
cancelling stops every pending pull at once."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from pullweights import ByteSource, GraphBuilder, GraphError, TensorDescriptor, raw_weight
from pullweights.events import Progress
from tests.graph.common import builder, declare


class GatedSource(ByteSource):
    """In-memory bytes that cannot be mapped; every read waits for ``release``."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.size = len(data)
        self.name = "gated"
        self.identity = f"gated:{id(self)}"
        self.release = asyncio.Event()
        self.reading = asyncio.Event()
        self.cancelled = 0

    async def read_into(self, offset: int, out: memoryview) -> None:
        self.check_range(offset, len(out))
        self.reading.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        out[:] = self._data[offset : offset + len(out)]


def _weight_graph(source: GatedSource, w: np.ndarray) -> tuple[GraphBuilder, dict[str, object]]:
    """x @ w with w pulled from ``source`` as a bound (run-time) weight."""
    b = builder()
    ref = raw_weight(source, 0, "float32", w.shape, label="w")
    x = b.input("x", TensorDescriptor("float32", [2, w.shape[0]]))
    return b, {"y": b.matmul(x, b.input("w", ref.descriptor, weight=ref))}


async def _no_tasks_left() -> None:
    for _ in range(5):
        await asyncio.sleep(0)
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_build_waits_for_its_weights() -> None:
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    source = GatedSource(w.tobytes())
    b, outputs = _weight_graph(source, w)
    events: list[Progress] = []
    task = asyncio.create_task(b.build(outputs, progress=events.append))  # type: ignore[arg-type]
    await asyncio.wait_for(source.reading.wait(), 5)
    await asyncio.sleep(0.05)
    assert not task.done()  # the graph cannot exist before its weight does
    source.release.set()
    graph = await asyncio.wait_for(task, 10)
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal((await graph.compute({"x": x}))["y"], x @ w)
    assert [(e.done, e.total, e.bytes_done, e.bytes_total) for e in events] == [(1, 1, 48, 48)]


async def test_cancel_build_while_a_weight_is_pulled() -> None:
    w = np.zeros((4, 3), np.float32)
    source = GatedSource(w.tobytes())
    b, outputs = _weight_graph(source, w)
    task = asyncio.create_task(b.build(outputs))  # type: ignore[arg-type]
    await asyncio.wait_for(source.reading.wait(), 5)
    start = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.perf_counter() - start < 1.0
    assert source.cancelled == 1
    await _no_tasks_left()


async def test_cancel_build_while_an_initializer_weight_is_pulled() -> None:
    """MatMulNBits weights are needed before the session exists; cancelling stops them too."""
    n, k, block = 8, 32, 32
    packed = np.zeros((n, 1, block // 2), np.uint8)
    scales = np.ones((n, 1), np.float32)
    source = GatedSource(packed.tobytes() + scales.tobytes())
    b = builder()
    b_ref = raw_weight(source, 0, "uint8", packed.shape)
    s_ref = raw_weight(source, packed.nbytes, "float32", scales.shape)
    a = declare(b, "a", np.zeros((1, k), np.float32))
    y = b.matmul_nbits(
        a,
        b.input("b", b_ref.descriptor, weight=b_ref),
        b.input("s", s_ref.descriptor, weight=s_ref),
        k=k,
        n=n,
        bits=4,
        block_size=block,
    )
    task = asyncio.create_task(b.build({"y": y}))
    await asyncio.wait_for(source.reading.wait(), 5)
    await asyncio.sleep(0.01)  # let both pulls start
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1)
    assert source.cancelled == 2
    await _no_tasks_left()


def test_a_builder_needs_a_context() -> None:
    with pytest.raises(GraphError, match=r"GraphBuilder needs a context .*create_context"):
        GraphBuilder(None)  # type: ignore[arg-type]
