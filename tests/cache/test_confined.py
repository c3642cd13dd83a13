"""The cache never follows a link out of its directory and never deletes outside it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from pullweights.cache import WeightCache
from pullweights.errors import CacheError
from tests.cache.payloads import entry_path, raw_payload


def _foreign(tmp_path: Path) -> Path:
    """A directory outside the cache full of things a careless cleaner would delete:
    directories named like staging directories and entries, and plain files."""
    foreign = tmp_path / "precious"
    (foreign / "0123abcd.1.deadbeef" / "data").mkdir(parents=True)
    (foreign / ("ab" * 16) / "data").mkdir(parents=True)
    for name in ("a.txt", "0123abcd.1.deadbeef/data/x", "trash.bin"):
        (foreign / name).write_text("keep me")
    return foreign


def _intact(foreign: Path) -> None:
    found = sorted(str(p.relative_to(foreign)) for p in foreign.rglob("*"))
    assert found == sorted(
        [
            "0123abcd.1.deadbeef",
            "0123abcd.1.deadbeef/data",
            "0123abcd.1.deadbeef/data/x",
            "a.txt",
            "ab" * 16,
            "ab" * 16 + "/data",
            "trash.bin",
        ]
    )
    assert (foreign / "a.txt").read_text() == "keep me"


def _stored(cache: WeightCache) -> tuple[np.ndarray, Path]:
    data = np.arange(256, dtype=np.float32)
    payload = raw_payload(data)
    with cache.writer(payload) as w:
        w.write("data", data)
    return data, entry_path(cache, payload)


@pytest.mark.parametrize("area", ["trash", "staging", "entries", "sessions", "index", "models"])
def test_a_linked_area_is_replaced_and_its_target_left_alone(tmp_path: Path, area: str) -> None:
    foreign = _foreign(tmp_path)
    cache = WeightCache(tmp_path / "cache")
    _stored(cache)
    shutil.rmtree(cache.root / area, ignore_errors=True)
    os.symlink(foreign, cache.root / area)
    problems = cache.verify()
    assert any(p.key == area and "link" in p.problem and p.removed for p in problems)
    assert not (cache.root / area).is_symlink() and (cache.root / area).is_dir()
    cache.prune(all=True)
    cache.verify()
    _intact(foreign)


def test_prune_and_writers_never_follow_a_linked_trash(tmp_path: Path) -> None:
    foreign = _foreign(tmp_path)
    cache = WeightCache(tmp_path / "cache")
    _stored(cache)
    os.symlink(foreign, cache.root / "trash")
    assert cache.prune(all=True)  # removes the entry through a real trash directory
    data = np.ones(8, np.float32)
    with cache.writer(raw_payload(data)) as w:
        w.write("data", data)
    assert cache.remove(cache.entries()[0].key)
    _intact(foreign)


def test_a_chunk_file_linked_elsewhere_is_never_read_or_deleted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = WeightCache(tmp_path / "cache")
    data, entry = _stored(cache)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(data.tobytes())  # the same bytes: only the link is wrong
    chunk = entry / "data" / "c" / "0"
    chunk.unlink()
    os.symlink(outside, chunk)
    assert cache.get(raw_payload(data)) is None  # damaged: removed, fetched again
    assert not entry.exists() and outside.read_bytes() == data.tobytes()
    assert "symbolic link" in caplog.text


def test_a_linked_key_prefix_directory_is_never_entered(tmp_path: Path) -> None:
    foreign = _foreign(tmp_path)
    cache = WeightCache(tmp_path / "cache")
    data, entry = _stored(cache)
    prefix = entry.parent
    shutil.rmtree(prefix)
    (foreign / entry.name).mkdir()
    (foreign / entry.name / "zarr.json").write_text("{}")
    os.symlink(foreign, prefix)
    assert cache.get(raw_payload(data)) is None
    with pytest.raises(CacheError):
        cache.remove(entry.name)  # refused: the path leads out of the cache
    cache.verify()
    cache.prune(all=True)
    assert (foreign / entry.name / "zarr.json").read_text() == "{}"
    (foreign / entry.name / "zarr.json").unlink()
    (foreign / entry.name).rmdir()
    _intact(foreign)
