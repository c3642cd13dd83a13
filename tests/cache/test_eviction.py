"""Size limits: least-recently-used entries go first; live and just-written ones stay."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from pullweights.cache import ModelInfo, WeightCache
from pullweights.cache.eviction import IndexItem, lru_victims
from pullweights.weights import Payload
from tests.cache.payloads import entry_path, raw_payload

KIB = 1024


def _payload(i: int) -> Payload:
    """Entry ``i``: 1 KiB of float32 filled with ``i``."""
    return raw_payload(np.full(256, i, np.float32), label=f"w{i}")


def _store(cache: WeightCache, i: int, used: float | None = None) -> Payload:
    payload = _payload(i)
    with cache.writer(payload) as w:
        w.write("data", np.full(256, i, np.float32))
    w.result = None  # do not hold the maps: held entries are never evicted
    if used is not None:
        _set_used(cache, payload, used)
    return payload


def _set_used(cache: WeightCache, payload: Payload, t: float) -> None:
    os.utime(entry_path(cache, payload) / "zarr.json", (t, t))


def _removed(models: list[ModelInfo]) -> set[str]:
    """Labels of the entries of pruned models (here: entries no model claims)."""
    assert all(m.name == "(no model)" for m in models)
    return {e.label for m in models for e in m.entries}


def _labels(cache: WeightCache) -> set[str]:
    return {e.label for e in cache.entries()}


def test_lru_victims_order_and_protection() -> None:
    items = {k: IndexItem(10, t) for k, t in [("a", 3.0), ("b", 1.0), ("c", 2.0), ("d", 4.0)]}
    assert lru_victims(items, 40) == []
    assert lru_victims(items, 25) == ["b", "c"]
    assert lru_victims(items, 25, protected={"b"}) == ["c", "a"]
    assert lru_victims(items, 0, protected={"a", "b", "c", "d"}) == []


def test_put_evicts_least_recently_used(tmp_path: Path) -> None:
    cache = WeightCache(tmp_path / "cache", max_bytes=3 * KIB)
    t0 = time.time() - 1000
    p = [_store(cache, i, t0 + i) for i in range(3)]
    assert cache.total_bytes() == 3 * KIB
    assert cache.get(p[0]) is not None  # w0 becomes the most recently used...
    _set_used(cache, p[0], t0 + 10)
    _store(cache, 3)  # ...so w1, now the oldest, makes room for w3
    assert _labels(cache) == {"w0", "w2", "w3"}
    assert cache.total_bytes() == 3 * KIB
    assert cache.get(p[1]) is None


def test_entries_with_live_arrays_are_not_evicted(tmp_path: Path) -> None:
    cache = WeightCache(tmp_path / "cache", max_bytes=2 * KIB)
    t0 = time.time() - 1000
    p0 = _store(cache, 0, t0)
    _store(cache, 1, t0 + 1)
    held = cache.get(p0)
    assert held is not None
    _set_used(cache, p0, t0)  # oldest, but mapped by this process
    _store(cache, 2)
    assert _labels(cache) == {"w0", "w2"}
    np.testing.assert_array_equal(held["data"], np.zeros(256, np.float32))


def test_entry_larger_than_the_limit_is_kept(tmp_path: Path) -> None:
    cache = WeightCache(tmp_path / "cache", max_bytes="512")
    _store(cache, 0, time.time() - 100)
    big = raw_payload(np.ones(1024, np.float32), label="big")
    with cache.writer(big) as w:
        w.write("data", np.ones(1024, np.float32))
    assert _labels(cache) == {"big"}


def test_other_processes_entries_are_counted(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    cache = WeightCache(root, max_bytes=3 * KIB)
    _store(cache, 0, time.time() - 100)
    assert cache.total_bytes() == KIB  # the index is loaded now
    other = WeightCache(root)  # "another process", no limit
    _store(other, 1, time.time() - 60)
    _store(other, 2, time.time() - 50)
    _store(cache, 3)  # within index_ttl: not counted yet (documented)
    assert _labels(cache) == {"w0", "w1", "w2", "w3"}
    cache.index_ttl = 0.0
    _store(other, 4, time.time() - 40)
    _store(cache, 5)
    assert _labels(cache) == {"w3", "w4", "w5"}


def test_prune_older_than_max_bytes_and_all(cache: WeightCache) -> None:
    now = time.time()
    payloads = [_store(cache, i, now - 86400 * (5 - i)) for i in range(5)]  # w0 oldest
    removed = cache.prune(older_than=3.5 * 86400)
    assert _removed(removed) == {"w0", "w1"}
    removed = cache.prune(max_bytes="2K")
    assert _removed(removed) == {"w2"}
    assert [e.label for e in cache.entries()] == ["w4", "w3"]  # most recent first
    key = cache.content_key(payloads[3])
    assert key is not None and cache.remove(key) and not cache.remove(key)
    assert _removed(cache.prune(all=True)) == {"w4"}
    assert cache.entries() == [] and cache.total_bytes() == 0


def test_remove_checks_the_key(cache: WeightCache) -> None:
    from pullweights.errors import CacheError

    with pytest.raises(CacheError, match="not a cache key"):
        cache.remove("../../etc")
