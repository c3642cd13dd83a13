"""Verification stamps: an entry verified once is not read again while its files are
unchanged; a file changed since (even with its size and mtime put back) is read and
found; fresh files are not stamped; ``verify`` reads everything; stamps are swept."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from pullweights.cache import WeightCache, checksum, stamps
from pullweights.cache.checksum import forget
from tests.cache.payloads import entry_path, raw_payload

KEY = "c" * 40


def _save(cache: WeightCache) -> Path:
    writer = cache.session_writer(KEY)
    directory = writer.open()
    (directory / "model.onnx").write_bytes(b"model" * 10)
    (directory / "model.data").write_bytes(bytes(range(256)) * 64)
    entry = writer.commit("a test session", "onnxruntime 0.0")
    forget()  # the writer remembered its files in this process
    return entry


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every file checksummed (by descriptor); the in-process memo cleared, so each
    open is what a new process would do."""
    forget()
    seen: list[int] = []
    real = checksum.checksum_fd

    def counting(fd: int) -> str:
        seen.append(fd)
        return real(fd)

    monkeypatch.setattr(checksum, "checksum_fd", counting)
    return seen


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files count as settled at once (the tests wait for the file clock themselves)."""
    monkeypatch.setattr(stamps, "SETTLED_NS", 0)


def _stamp_of(cache: WeightCache, kind: str, key: str) -> Path:
    return cache.root / stamps.AREA / f"{kind}-{key}"


def test_a_stamped_session_is_not_read_again(
    cache: WeightCache, reads: list[int], settled: None
) -> None:
    entry = _save(cache)
    assert cache.open_session(KEY) == entry and len(reads) == 2  # both files read
    assert _stamp_of(cache, "session", KEY).is_file()
    forget()
    assert cache.open_session(KEY) == entry and len(reads) == 2  # stamped: none read


def test_a_file_changed_after_its_stamp_is_read_and_found(
    cache: WeightCache, reads: list[int], settled: None
) -> None:
    entry = _save(cache)
    assert cache.open_session(KEY) == entry
    data = entry / "model.data"
    before = os.stat(data)
    time.sleep(0.05)  # past the file clock's tick (1-4 ms), so the write moves ctime
    with open(data, "r+b") as f:
        f.seek(1000)
        f.write(b"\xff")
    os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))  # size and mtime as before
    forget()
    assert cache.open_session(KEY) is None and not entry.exists()  # read, found, removed


def test_fresh_files_are_verified_but_not_stamped(cache: WeightCache, reads: list[int]) -> None:
    entry = _save(cache)
    assert cache.open_session(KEY) == entry and len(reads) == 2
    assert not _stamp_of(cache, "session", KEY).exists()  # written under SETTLED_NS ago
    forget()
    assert cache.open_session(KEY) == entry and len(reads) == 4  # so read again


def test_a_stamped_weight_entry_is_not_read_again(
    cache: WeightCache, reads: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = np.arange(4096, dtype=np.float32).reshape(64, 64)
    payload = raw_payload(data)
    with cache.writer(payload) as w:  # opens its entry: fresh files, so no stamp
        w.write("data", data)
    assert not _stamp_of(cache, "weights", entry_path(cache, payload).name).exists()
    monkeypatch.setattr(stamps, "SETTLED_NS", 0)
    forget()  # the writer remembered its file in this process
    got = cache.get(payload)
    assert got is not None and len(reads) == 1
    np.testing.assert_array_equal(got["data"], data)
    forget()
    again = cache.get(payload)
    assert again is not None and len(reads) == 1
    np.testing.assert_array_equal(again["data"], data)
    chunk = entry_path(cache, payload) / "data" / "c" / "0" / "0"
    time.sleep(0.05)
    raw = bytearray(chunk.read_bytes())
    raw[0] ^= 1
    chunk.write_bytes(raw)
    forget()
    assert cache.get(payload) is None and len(reads) == 2  # read again, damaged, removed


def test_verify_reads_stamped_files_and_sweeps_stamps(
    cache: WeightCache, reads: list[int], settled: None
) -> None:
    _save(cache)
    assert cache.open_session(KEY) is not None
    forget()
    assert cache.verify() == [] and len(reads) == 4  # verify ignores the stamp: read again
    assert cache.remove(KEY)
    assert _stamp_of(cache, "session", KEY).exists()
    assert cache.verify() == []
    assert not _stamp_of(cache, "session", KEY).exists()  # swept with its entry
