"""From a URL, the same staged pipeline: a server failing mid-load stops the whole load
cleanly, and a rerun completes from what was published."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from loaders import load_model
from pullweights import FetchError, HttpSettings, create_context
from pullweights.cache import WeightCache
from pullweights.events import Event, Phase, subscribed
from pullweights.gguf.reader import open_gguf
from tests.reference import write_tiny_model
from tests.servers.faults import Fault, FaultServer

NO_RETRIES = HttpSettings(retries=0)


async def _logits(model: object, ids: list[int]) -> np.ndarray:
    return await model.forward(ids, all_logits=True)  # type: ignore[attr-defined, no-any-return]


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_tiny_model(
        tmp_path / "m.gguf", "qwen2", quant="Q8_0", hidden=256, head_dim=64, n_layers=4, ffn=512
    )


async def test_stages_compile_while_later_ranges_download(tiny: Path, tmp_path: Path) -> None:
    seen: list[Event] = []
    async with FaultServer(tiny.read_bytes()) as server:
        ctx = create_context("low-power", cache_dir=tmp_path / "cache")
        with subscribed(seen.append):
            async with await open_gguf(server.url, remote_dir=tmp_path / "cache" / "remote") as g:
                model = await load_model(g, context=ctx, context_length=32, stages="marked")
    compiles = [e for e in seen if e.phase == Phase.COMPILE and e.kind == "begin"]
    fetches = [e for e in seen if e.phase == Phase.FETCH and e.kind == "end"]
    assert compiles and fetches
    # the first stage compiled before the last bytes arrived
    assert compiles[0].time < max(e.time for e in fetches)
    local = await load_model(str(tiny), context=create_context("low-power", cache_dir=None))
    ids = [1, 7, 3, 9]
    np.testing.assert_array_equal(await _logits(model, ids), await _logits(local, ids))


async def test_a_server_failing_mid_load_stops_it_cleanly(tiny: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ids = [1, 7, 3, 9]
    local = await load_model(str(tiny), context=create_context("low-power", cache_dir=None))
    expected = await _logits(local, ids)
    async with FaultServer(tiny.read_bytes()) as server:
        fetched: list[Event] = []

        def watch(event: Event) -> None:
            if event.phase == Phase.FETCH and event.kind == "end":
                fetched.append(event)
                if len(fetched) == 3:  # some weights have arrived: break the next one
                    server.push(Fault("drop", after=100))

        ctx = create_context("low-power", cache_dir=cache)
        with subscribed(watch), pytest.raises(FetchError):
            async with await open_gguf(
                server.url, remote_dir=cache / "remote", http=NO_RETRIES
            ) as gguf:
                await load_model(gguf, context=ctx, context_length=32, stages="marked")
        assert len(fetched) >= 3
        await asyncio.sleep(0.05)
        assert {t for t in asyncio.all_tasks() if not t.done()} == {asyncio.current_task()}
        staging = cache / "staging"
        assert not staging.exists() or not any(staging.iterdir())
        published = len(WeightCache(cache).entries())
        assert WeightCache(cache).verify() == []
        # A rerun completes from what was published, with the same logits.
        async with await open_gguf(server.url, remote_dir=cache / "remote") as gguf:
            model = await load_model(gguf, context=ctx, context_length=32, stages="marked")
        assert model.stats.cache_hits >= 1 or published == 0
        np.testing.assert_array_equal(await _logits(model, ids), expected)
