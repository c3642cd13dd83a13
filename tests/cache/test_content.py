"""The same bytes are stored once: entries keyed by content, found again from a copy of the
file or the same URL spelled another way; a warm load hashes nothing."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

import pullweights.cache.store as store_module
from pullweights.cache import WeightCache
from tests.cache.graphs import load
from tests.servers.static_aiohttp import AiohttpStaticServer


def _keys(cache: WeightCache) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {"weights": set(), "session": set()}
    for e in cache.entries():
        found[e.kind].add(e.key)
    return found


async def test_a_copy_is_not_transformed_or_stored_again(
    tmp_path: Path, model_file: Path, expected: np.ndarray
) -> None:
    root = tmp_path / "cache"
    first, out = await load(root, model_file)
    assert first.transformed == 2 and not first.from_saved_session
    np.testing.assert_array_equal(out, expected)
    cache = WeightCache(root)
    stored = _keys(cache)
    # The weight entries of a local file are dropped once its session is saved.
    assert len(stored["weights"]) == 0 and len(stored["session"]) == 1
    copy = tmp_path / "elsewhere" / "copy.gguf"
    copy.parent.mkdir()
    shutil.copy(model_file, copy)
    again, out = await load(root, copy)
    assert again.transformed == 0 and again.from_saved_session  # found by content
    np.testing.assert_array_equal(out, expected)
    assert _keys(cache) == stored
    # Two models share the entries; removing one keeps what the other uses.
    models = cache.models()
    assert sorted(m.name for m in models) == sorted([str(model_file), str(copy)])
    assert all(m.keys == stored["weights"] | stored["session"] for m in models)
    cache.remove_model(str(copy))
    assert _keys(cache) == stored and [m.name for m in cache.models()] == [str(model_file)]
    cache.remove_model(str(model_file))
    assert _keys(cache) == {"weights": set(), "session": set()} and cache.models() == []


async def test_weight_entries_of_a_copy_are_not_stored_again(
    tmp_path: Path, model_file: Path, expected: np.ndarray
) -> None:
    root = tmp_path / "cache"
    first, out = await load(root, model_file, sessions=False)  # entries stay
    assert first.transformed == 2
    stored = _keys(WeightCache(root))
    assert len(stored["weights"]) == 2 and not stored["session"]
    copy = tmp_path / "copy.gguf"
    shutil.copy(model_file, copy)
    again, out = await load(root, copy, sessions=False)
    assert again.transformed == 0 and again.cache_hits == 2
    np.testing.assert_array_equal(out, expected)
    assert _keys(WeightCache(root)) == stored


def _localhost_is_loopback() -> bool:
    try:
        infos = socket.getaddrinfo("localhost", 80, socket.AF_INET)
    except OSError:
        return False
    return any(info[4][0] == "127.0.0.1" for info in infos)


@pytest.mark.skipif(not _localhost_is_loopback(), reason="localhost is not 127.0.0.1 here")
async def test_the_same_url_as_localhost_is_not_stored_again(
    tmp_path: Path, server: AiohttpStaticServer, expected: np.ndarray
) -> None:
    root = tmp_path / "cache"
    url = f"http://127.0.0.1:{server.port}/model.gguf"
    first, out = await load(root, url, remember=True)
    assert first.transformed == 2
    np.testing.assert_array_equal(out, expected)
    stored = _keys(WeightCache(root))
    other = f"http://localhost:{server.port}/model.gguf"
    again, out = await load(root, other, remember=True)
    # The bytes had to be fetched to learn their content, but nothing is transformed,
    # stored or compiled again: the saved session of the first URL is used.
    assert again.transformed == 0 and again.from_saved_session
    np.testing.assert_array_equal(out, expected)
    assert _keys(WeightCache(root)) == stored
    assert {m.url for m in WeightCache(root).models()} == {url, other}


async def test_a_warm_load_hashes_nothing(
    tmp_path: Path, model_file: Path, expected: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cache"
    await load(root, model_file)
    hashed: list[int] = []
    real = store_module.digest

    def counting(data: memoryview) -> str:
        hashed.append(len(data))
        return real(data)

    monkeypatch.setattr(store_module, "digest", counting)
    again, out = await load(root, model_file)  # a fresh context: only the index is known
    assert again.from_saved_session and hashed == []
    np.testing.assert_array_equal(out, expected)
    # Without the index (deleted), the content keys are computed again and still match.
    shutil.rmtree(root / "index")
    third, out = await load(root, model_file)
    # Each payload hashed once whole, and its first MiB for the index of heads.
    assert third.from_saved_session and third.transformed == 0 and len(hashed) == 4
    np.testing.assert_array_equal(out, expected)
