"""Parsed GGUF headers kept in the cache: a warm open parses nothing, a changed file is
parsed again, a damaged header file is removed, an unwritable cache keeps none."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from pullweights.cache import WeightCache, blobs, headers
from pullweights.gguf import open_gguf
from pullweights.gguf import reader as gguf_reader
from pullweights.gguf.header import RawHeader
from tests.gguf.gguf_files import write_sample


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "m.gguf"
    write_sample(path, nested=False)
    return path


def _refuse_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(source: object) -> None:
        raise AssertionError("the header was parsed again")

    monkeypatch.setattr(gguf_reader, "parse_header", refuse)


async def _tensors(path: Path, cache: WeightCache) -> dict[str, tuple[int, ...]]:
    async with await open_gguf(path, headers=cache.headers) as gguf:
        return {name: (t.offset, *t.shape) for name, t in gguf.tensors.items()}


async def test_a_warm_open_reads_the_stored_header(
    model: Path, cache: WeightCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with await open_gguf(model) as plain:
        want = {name: (t.offset, *t.shape) for name, t in plain.tensors.items()}
        metadata = dict(plain.metadata)
    assert await _tensors(model, cache) == want  # parsed, and stored
    assert len(os.listdir(cache.root / headers.AREA)) == 1
    _refuse_parsing(monkeypatch)
    async with await open_gguf(model, headers=cache.headers) as gguf:
        assert {n: (t.offset, *t.shape) for n, t in gguf.tensors.items()} == want
        assert list(gguf.metadata) == list(metadata)
        np.testing.assert_array_equal(gguf.metadata["t.ints"], metadata["t.ints"])
        assert gguf.metadata["tokenizer.ggml.tokens"] == metadata["tokenizer.ggml.tokens"]


async def test_a_changed_file_is_parsed_again(model: Path, cache: WeightCache) -> None:
    await _tensors(model, cache)
    write_sample(model, tokens=("other", "tokens"), nested=False)
    async with await open_gguf(model, headers=cache.headers) as gguf:
        assert gguf.metadata["tokenizer.ggml.tokens"] == ["other", "tokens"]
    assert len(os.listdir(cache.root / headers.AREA)) == 2  # one per identity


async def test_a_damaged_header_file_is_removed_and_parsed_again(
    model: Path, cache: WeightCache, caplog: pytest.LogCaptureFixture
) -> None:
    want = await _tensors(model, cache)
    [stored] = (cache.root / headers.AREA).iterdir()
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x10
    stored.write_bytes(data)
    with caplog.at_level(logging.WARNING, "pullweights.cache"):
        assert await _tensors(model, cache) == want
    assert "damaged" in caplog.text
    assert stored.exists()  # removed, then stored again whole
    assert headers.HeaderStore(cache.root).get("no such identity") is None


async def test_an_unwritable_cache_keeps_no_header(
    model: Path, cache: WeightCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(blobs, "replace_file", refuse)
    assert await _tensors(model, cache)
    assert not list((cache.root / headers.AREA).iterdir())


async def test_at_most_max_headers_are_kept(
    tmp_path: Path, cache: WeightCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(headers, "MAX_HEADERS", 2)
    for i in range(4):
        path = tmp_path / f"m{i}.gguf"
        write_sample(path, big_rows=1, nested=False)
        await _tensors(path, cache)
    assert len(list((cache.root / headers.AREA).iterdir())) == 2


async def test_a_stored_header_the_file_disagrees_with_is_dropped(
    model: Path, cache: WeightCache, caplog: pytest.LogCaptureFixture
) -> None:
    """A header stored under this identity that the file cannot hold (its tensors past
    the end: what a same-size, same-mtime rewrite could leave) is removed and the file
    parsed."""
    want = await _tensors(model, cache)
    async with await open_gguf(model) as gguf:
        identity = gguf.source.identity
    store = cache.headers
    stored = store.get(identity)
    assert stored is not None
    stored.end = model.stat().st_size + 4096  # the data would start past the end
    store.put(identity, stored)
    with caplog.at_level(logging.WARNING, "pullweights.cache"):
        assert await _tensors(model, cache) == want
    assert "does not fit the file" in caplog.text
    fresh = store.get(identity)
    assert fresh is not None and fresh.end < model.stat().st_size


async def test_removing_a_model_removes_its_stored_header(model: Path, cache: WeightCache) -> None:
    """``cache rm`` (and prune) of a model take its parsed header with it; the header of
    another model stays."""
    other = model.with_name("other.gguf")
    write_sample(other, tokens=("x", "y"), nested=False)
    for path in (model, other):
        async with await open_gguf(path, headers=cache.headers) as gguf:
            cache.register_model(gguf.source, name=str(path))
    assert len(os.listdir(cache.root / headers.AREA)) == 2
    cache.remove_model(str(model))
    [kept] = os.listdir(cache.root / headers.AREA)
    async with await open_gguf(other) as gguf:
        assert kept == os.path.basename(
            blobs.blob_path(cache.root, headers.KIND, blobs.blob_key(gguf.source.identity))
        )


async def test_the_store_is_read_and_written_off_the_event_loop(
    model: Path, cache: WeightCache
) -> None:
    """A slow store (a busy disk) does not stall other tasks: the loop keeps ticking
    while the header is read from it and written to it."""
    import asyncio
    import time

    class Slow(headers.HeaderStore):
        def get(self, identity: str) -> RawHeader | None:
            time.sleep(0.2)
            return super().get(identity)

        def put(self, identity: str, header: RawHeader) -> None:
            time.sleep(0.2)
            super().put(identity, header)

    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        for _ in range(2):  # parsed and put, then got
            before = ticks
            async with await open_gguf(model, headers=Slow(cache.root)):
                pass
            assert ticks - before >= 5, ticks - before
    finally:
        ticker.cancel()
