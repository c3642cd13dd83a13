"""Cancelling a cold load at any phase stops it whole: nothing runs on, nothing leaks,
and the cache holds only whole entries that the next load uses."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType

from pullweights import ByteSource, GraphBuilder, TensorDescriptor, create_context
from pullweights.cache import WeightCache
from pullweights.events import Event, Phase, subscribed
from pullweights.gguf.layouts import MatMulNBitsTransform
from pullweights.gguf.reader import GGUFFile, open_gguf
from pullweights.runtime.graph import Graph
from tests.graph.test_session_cache import write_gguf

Q = GGMLQuantizationType
DIM = 1024


class Unmapped(ByteSource):
    """Another source's bytes, never mappable: every payload is read (fetch phase)."""

    def __init__(self, inner: ByteSource) -> None:
        self.inner = inner
        self.size = inner.size
        self.name = f"unmapped:{inner.name}"
        self.identity = f"unmapped:{inner.identity}"

    async def read_into(self, offset: int, out: memoryview) -> None:
        await asyncio.sleep(0.005)  # slow enough that a cancel lands mid-load
        await self.inner.read_into(offset, out)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "four.gguf"
    write_gguf(path, 0, shapes=[(Q.Q8_0, DIM, DIM)] * 4)
    return path


async def build(gguf: GGUFFile, cache: Path | None, unmapped: bool = True) -> Graph:
    """``relu(x @ W^T)`` through four Q8_0 matrices, one stage each (each saved)."""
    b = GraphBuilder(create_context("low-power", cache_dir=cache))
    x = b.input("x", TensorDescriptor("float32", [2, DIM]))
    h = x
    source: ByteSource = Unmapped(gguf.source) if unmapped else gguf.source
    for i in range(4):
        tensor = gguf.tensor(f"w{i}")
        t = MatMulNBitsTransform(tensor.ggml_type, tensor.shape)
        from pullweights.weights import Payload

        payload = Payload(source, tensor.offset, tensor.nbytes, transform=t, label=f"w{i}")
        w = {p: b.input(f"w{i}.{p}", r.descriptor, weight=r) for p, r in payload.refs().items()}
        with b.stage(f"layer {i}"):
            h = b.relu(
                b.matmul_nbits(
                    h, w["B"], w["scales"], w["zero_points"], k=DIM, n=DIM, bits=8, block_size=32
                )
            )
    return await b.build({"y": h}, stages="marked")


def _fds() -> set[str]:
    gc.collect()
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            found.add(f"{fd}:{os.readlink(f'/proc/self/fd/{fd}')}")
    return found


@pytest.mark.parametrize(
    "phase",
    [Phase.FETCH, Phase.TRANSFORM, Phase.CACHE_WRITE, Phase.COMPILE, Phase.SAVE],
    ids=lambda p: str(p),
)
async def test_cancel_at_every_phase(model_path: Path, tmp_path: Path, phase: Phase) -> None:
    x = np.random.default_rng(0).standard_normal((2, DIM)).astype(np.float32)
    async with await open_gguf(model_path) as gguf:
        expected = (await (await build(gguf, None)).compute({"x": x}))["y"]
        cache = tmp_path / "cache"
        loop = asyncio.get_running_loop()
        seen: list[Event] = []
        hit = asyncio.Event()
        fds = _fds()

        def watch(event: Event) -> None:
            seen.append(event)
            # a stage after the first, so some work is done and some is still to come
            later = phase not in (Phase.COMPILE, Phase.SAVE) or event.stage != "layer 0"
            if event.phase == phase and event.kind == "begin" and later and not hit.is_set():
                loop.call_soon_threadsafe(hit.set)

        with subscribed(watch):
            task = asyncio.ensure_future(build(gguf, cache))
            waiter = asyncio.ensure_future(hit.wait())
            await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED, timeout=60)
            assert hit.is_set(), f"the load never reached {phase}"
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            waiter.cancel()
            ended = len(seen)
        # Nothing of the load runs on: every span that began has ended, no task is left,
        # no file is held open, no staging directory is left behind.
        begun = {e.span for e in seen if e.kind == "begin"}
        done = {e.span for e in seen if e.kind == "end"}
        assert begun == done, [e for e in seen if e.span in begun - done]
        await asyncio.sleep(0.05)
        assert len(seen) == ended
        assert {t for t in asyncio.all_tasks() if not t.done()} == {asyncio.current_task()}
        leaked = {f for f in _fds() - fds if "/proc/" not in f}
        assert not leaked
        staging = cache / "staging"
        assert not staging.exists() or not [p for p in staging.iterdir() if p.is_dir()]
        assert WeightCache(cache).verify() == []
        # The next load completes from what was published, with the same result.
        graph = await build(gguf, cache)
        np.testing.assert_array_equal((await graph.compute({"x": x}))["y"], expected)
