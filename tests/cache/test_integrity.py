"""Integrity on the load path: every file is checked before onnxruntime sees it, and a
saved session is used only while the entries it was built from are whole and unchanged."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from pullweights.cache import WeightCache
from pullweights.cache.checksum import forget
from tests.cache.graphs import load
from tests.graph.test_session_cache import build, context
from tests.servers.static_aiohttp import AiohttpStaticServer


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x5A]))


def _largest_chunk(cache: WeightCache) -> Path:
    chunks = [p for e in cache.entries() if e.kind == "weights" for p in e.path.rglob("c/*/*/*")]
    return max(chunks, key=lambda p: p.stat().st_size)


@pytest.fixture(autouse=True)
def _fresh_memo() -> None:
    forget()  # each test reads files as a new process would


def _url(server: AiohttpStaticServer) -> str:
    """The model over HTTP: a remote model keeps its weight entries next to its saved
    session (a local file's are dropped once the session is saved)."""
    return f"http://127.0.0.1:{server.port}/model.gguf"


async def test_a_flipped_entry_rebuilds_the_entry_and_the_session(
    tmp_path: Path,
    server: AiohttpStaticServer,
    expected: np.ndarray,
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = tmp_path / "cache"
    model_file = _url(server)
    await load(root, model_file)
    cache = WeightCache(root)
    [session] = [e for e in cache.entries() if e.kind == "session"]
    chunk = _largest_chunk(cache)
    _flip(chunk, 12345)
    with caplog.at_level(logging.WARNING, "pullweights.cache"):
        again, out = await load(root, model_file)
    np.testing.assert_array_equal(out, expected)
    assert not again.from_saved_session and again.transformed == 1  # both rebuilt
    assert any("damaged" in r.message and "removed" in r.message for r in caplog.records)
    assert cache.verify() == []
    third, out = await load(root, model_file)
    assert third.from_saved_session
    np.testing.assert_array_equal(out, expected)
    assert (root / "sessions" / session.key).is_dir()  # the same key, saved again whole


async def test_a_damaged_entry_is_never_baked_into_a_session(
    tmp_path: Path, model_file: Path, expected: np.ndarray
) -> None:
    root = tmp_path / "cache"
    # Entries only, no session; then a byte flips before the first session is built.
    await build(context(root, session_cache=False), model_file)
    _flip(_largest_chunk(WeightCache(root)), 999)
    forget()
    first, out = await load(root, model_file)
    np.testing.assert_array_equal(out, expected)  # the entry was checked before compiling
    assert first.transformed == 1
    second, out = await load(root, model_file)
    assert second.from_saved_session
    np.testing.assert_array_equal(out, expected)


async def test_verify_removes_a_session_with_its_damaged_entry(
    tmp_path: Path, server: AiohttpStaticServer, expected: np.ndarray
) -> None:
    """The old failure: verify removed the bad entry, then said "ok" while the session
    built from it kept giving wrong results."""
    root = tmp_path / "cache"
    model_file = _url(server)
    await load(root, model_file)
    cache = WeightCache(root)
    _flip(_largest_chunk(cache), 4242)
    problems = cache.verify()
    kinds = sorted(p.path.parent.name for p in problems)
    assert kinds[-1] == "sessions" and len(problems) == 2 and all(p.removed for p in problems)
    assert (
        "built from weight entry" in next(p for p in problems if "sessions" in str(p.path)).problem
    )
    assert cache.verify() == []
    again, out = await load(root, model_file)
    np.testing.assert_array_equal(out, expected)
    assert not again.from_saved_session


async def test_a_session_outlives_the_entries_it_was_built_from(
    tmp_path: Path, server: AiohttpStaticServer, model_file: Path, expected: np.ndarray
) -> None:
    """It holds a copy of their bytes: an evicted (or, for a local file, dropped) entry
    does not make it wrong, only a damaged one does."""
    root = tmp_path / "cache"
    await load(root, _url(server))
    cache = WeightCache(root)
    victim = next(e for e in cache.entries() if e.kind == "weights")
    assert cache.remove(victim.key)
    again, out = await load(root, _url(server))
    assert again.from_saved_session and cache.verify() == []
    np.testing.assert_array_equal(out, expected)
    local = tmp_path / "local"
    await load(local, model_file)
    assert [e.kind for e in WeightCache(local).entries()] == ["session"]  # entries dropped
    again, out = await load(local, model_file)
    assert again.from_saved_session
    np.testing.assert_array_equal(out, expected)


async def test_a_zeroed_page_of_a_saved_session_is_caught(
    tmp_path: Path, model_file: Path, expected: np.ndarray
) -> None:
    root = tmp_path / "cache"
    await load(root, model_file)
    [session] = [e for e in WeightCache(root).entries() if e.kind == "session"]
    with open(session.path / "model.data", "r+b") as f:
        f.seek(8192)
        f.write(b"\0" * 4096)
    again, out = await load(root, model_file)
    # Rebuilt: its entries had been dropped, so the weights are made again from the file.
    assert not again.from_saved_session and again.transformed == 2
    np.testing.assert_array_equal(out, expected)
