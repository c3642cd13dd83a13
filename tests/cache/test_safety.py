"""Failures never leave an entry that reads back wrong: errors, cancellation, kills, full
disks, tampering, and two writers of one key."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import pullweights.cache.writer as writer_module
from pullweights.cache import WeightCache
from pullweights.errors import CacheError
from tests.cache.payloads import entry_dirs, entry_path, leftovers, raw_payload, split_payload

REPO = Path(__file__).resolve().parents[2]


def _data(n: int = 4096, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def _nothing_stored(cache: WeightCache) -> None:
    assert entry_dirs(cache.root) == []
    assert leftovers(cache.root) == []


# -- errors and cancellation inside the writer -------------------------------------------


async def test_exception_inside_writer_leaves_nothing(cache: WeightCache) -> None:
    data = _data()
    payload = raw_payload(data)
    with pytest.raises(ValueError, match="producer failed"):
        async with cache.writer(payload) as w:
            w.array()[:100] = data[:100]
            raise ValueError("producer failed")
    _nothing_stored(cache)
    assert cache.get(payload) is None
    await cache.put(payload, {"data": data})  # the key is still usable
    np.testing.assert_array_equal(cache.get(payload)["data"], data)  # type: ignore[index]


async def test_cancel_inside_writer_leaves_nothing(cache: WeightCache) -> None:
    data = _data()
    payload = raw_payload(data)
    started = asyncio.Event()

    async def producer() -> None:
        async with cache.writer(payload) as w:
            w.array()[:100] = data[:100]
            started.set()
            await asyncio.Event().wait()  # a download that never finishes

    task = asyncio.create_task(producer())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    _nothing_stored(cache)


async def test_cancel_during_commit_publishes_nothing(
    cache: WeightCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _data()
    payload = raw_payload(data)
    hashing = threading.Event()
    release = threading.Event()
    real_checksum = writer_module.checksum  # type: ignore[attr-defined]

    def slow_checksum(buf: object) -> str:
        hashing.set()
        release.wait(5)
        return real_checksum(buf)  # type: ignore[arg-type]

    monkeypatch.setattr(writer_module, "checksum", slow_checksum)

    async def producer() -> None:
        async with cache.writer(payload) as w:
            w.array()[...] = data  # hashed at commit, in the worker thread

    task = asyncio.create_task(producer())
    await asyncio.to_thread(hashing.wait, 5)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done()  # it waits for the commit thread to clean up
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    _nothing_stored(cache)


def test_unwritten_part_is_refused(cache: WeightCache) -> None:
    payload, raw = split_payload(64)
    with pytest.raises(CacheError, match="never written"), cache.writer(payload) as w:
        w.write("lo", (raw & 15).reshape(-1, 4))
    _nothing_stored(cache)


def test_wrong_part_shape_or_name_is_refused(cache: WeightCache) -> None:
    payload = raw_payload(_data(16))
    wrong_type = pytest.raises(CacheError, match=r"float32\[16\], got float64\[16\]")
    with wrong_type, cache.writer(payload) as w:
        w.write("data", np.zeros(16))
    with pytest.raises(CacheError, match="no part 'B'"), cache.writer(payload) as w:
        w.array("B")
    _nothing_stored(cache)


# -- a killed writer ---------------------------------------------------------------------

_CHILD = """
import sys, time
import numpy as np
sys.path.insert(0, {repo!r})
from pullweights.cache import WeightCache
from tests.cache.payloads import raw_payload
data = np.random.default_rng(0).standard_normal(1 << 18).astype(np.float32)
w = WeightCache({root!r}).writer(raw_payload(data))
w.open()
out = w.array()
out[: data.size // 2] = data[: data.size // 2]
print("half", flush=True)
time.sleep(60)
"""


def test_writer_killed_mid_write_leaves_no_entry(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    code = _CHILD.format(repo=str(REPO), root=str(root))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "half\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    data = np.random.default_rng(0).standard_normal(1 << 18).astype(np.float32)
    payload = raw_payload(data)
    cache = WeightCache(root)
    assert cache.get(payload) is None and not cache.contains(payload)
    assert entry_dirs(root) == [] and len(os.listdir(root / "staging")) == 1
    problems = cache.verify()
    assert [p.problem for p in problems] == ["partial write left by a stopped writer"]
    assert problems[0].key == payload.key and problems[0].removed  # the staging name
    assert leftovers(root) == []
    with cache.writer(payload) as w:
        w.write("data", data)
    np.testing.assert_array_equal(cache.get(payload)["data"], data)  # type: ignore[index]


def test_new_writer_cleans_up_after_killed_one(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    stale = root / "staging" / "0123abcd.99999.deadbeef"
    (stale / "data" / "c" / "0").mkdir(parents=True)
    (stale / "data" / "c" / "0" / "0").write_bytes(b"\0" * 64)  # nobody holds its lock
    cache = WeightCache(root)
    with cache.writer(raw_payload(_data(16))) as w:
        w.write("data", _data(16))
    assert leftovers(root) == []


# -- full disk ---------------------------------------------------------------------------


def test_full_disk_at_allocation(cache: WeightCache, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    payload = raw_payload(np.zeros(1 << 18, np.float32))
    with pytest.raises(CacheError) as info, cache.writer(payload):
        raise AssertionError("the writer must not open")
    message = str(info.value)
    assert str(cache.root) in message and "1.0 MiB" in message and "full" in message
    assert isinstance(info.value.__cause__, OSError)
    _nothing_stored(cache)


def test_full_disk_at_commit(cache: WeightCache, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = raw_payload(_data())

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(CacheError, match="full"), cache.writer(payload) as w:
        w.write("data", _data())
        monkeypatch.setattr(os, "fsync", no_space)
    monkeypatch.undo()
    _nothing_stored(cache)
    assert cache.get(payload) is None


_FSIZE_CHILD = """
import json, resource, signal, sys
import numpy as np
sys.path.insert(0, {repo!r})
from pullweights.cache import WeightCache
from pullweights.errors import CacheError
from tests.cache.payloads import raw_payload
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
cache = WeightCache({root!r})
small, big = np.ones(1000, np.float32), np.ones(1 << 20, np.float32)
try:
    with cache.writer(raw_payload(big)) as w:
        w.write("data", big)
    result = "stored"
except CacheError as exc:
    result = str(exc)
with cache.writer(raw_payload(small)) as w:
    w.write("data", small)
print(json.dumps(result))
"""


def test_file_size_limit_in_a_real_process(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes the kernel refuse the allocation (EFBIG): same path as ENOSPC."""
    root = tmp_path / "cache"
    code = _FSIZE_CHILD.format(repo=str(REPO), root=str(root))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    message = json.loads(done.stdout)
    assert str(root) in message and "4.0 MiB" in message, message
    assert len(entry_dirs(root)) == 1 and leftovers(root) == []  # only the small entry


# -- tampering ---------------------------------------------------------------------------


def _stored(cache: WeightCache) -> tuple[np.ndarray, Path]:
    data = _data()
    payload = raw_payload(data)
    with cache.writer(payload) as w:
        w.write("data", data)
    return data, entry_path(cache, payload)


@pytest.mark.parametrize("damage", ["truncate", "extend", "delete", "record", "garbage"])
def test_damaged_entry_is_never_read(cache: WeightCache, damage: str) -> None:
    data, entry = _stored(cache)
    payload = raw_payload(data)
    chunk = entry / "data" / "c" / "0"
    if damage == "truncate":
        os.truncate(chunk, data.nbytes // 2)
    elif damage == "extend":
        with open(chunk, "ab") as f:
            f.write(b"\0" * 4)
    elif damage == "delete":
        chunk.unlink()
    elif damage == "record":
        (entry / "zarr.json").unlink()
    else:
        (entry / "zarr.json").write_text("{not json")
    assert not cache.contains(payload)
    assert cache.get(payload) is None
    assert entry_dirs(cache.root) == [] or damage == "record"  # removed on sight
    assert cache.verify() == [] or damage == "record"
    assert entry_dirs(cache.root) == []
    with cache.writer(payload) as w:
        w.write("data", data)
    np.testing.assert_array_equal(cache.get(payload)["data"], data)  # type: ignore[index]


def test_flipped_byte_is_caught_by_verification(cache: WeightCache) -> None:
    data, entry = _stored(cache)
    payload = raw_payload(data)
    chunk = entry / "data" / "c" / "0"
    with open(chunk, "r+b") as f:
        f.seek(1234)
        byte = f.read(1)
        f.seek(1234)
        f.write(bytes([byte[0] ^ 0x10]))
    problems = cache.verify(remove=False)
    assert len(problems) == 1 and "checksum" in problems[0].problem and not problems[0].removed
    assert cache.get(payload) is None
    assert entry_dirs(cache.root) == []


# -- two writers of one key --------------------------------------------------------------


def test_concurrent_writers_of_one_key_in_threads(cache: WeightCache) -> None:
    payload, raw = split_payload(4096)
    assert payload.transform is not None
    arrays = payload.transform.apply(raw)
    barrier = threading.Barrier(3)
    results: list[dict[str, np.ndarray]] = []

    def write() -> None:
        w = cache.writer(payload)
        w.open()
        for name, arr in arrays.items():
            w.write(name, arr)
        barrier.wait(5)  # both commit at once
        results.append(w.commit())

    threads = [threading.Thread(target=write) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 3
    for result in results:
        for name, want in arrays.items():
            np.testing.assert_array_equal(result[name], want)
    assert len(entry_dirs(cache.root)) == 1 and leftovers(cache.root) == []
    assert cache.verify() == []


async def test_concurrent_puts_of_one_key_in_tasks(cache: WeightCache) -> None:
    data = _data()
    payload = raw_payload(data)
    got = await asyncio.gather(*(cache.put(payload, {"data": data}) for _ in range(4)))
    for arrays in got:
        np.testing.assert_array_equal(arrays["data"], data)
    assert len(entry_dirs(cache.root)) == 1 and leftovers(cache.root) == []


def test_broken_entry_in_the_way_is_replaced(cache: WeightCache) -> None:
    data = _data()
    payload = raw_payload(data)
    blocker = entry_path(cache, payload)
    (blocker / "data").mkdir(parents=True)  # a directory without a record
    with cache.writer(payload) as w:
        w.write("data", data)
    np.testing.assert_array_equal(cache.get(payload)["data"], data)  # type: ignore[index]
    assert leftovers(cache.root) == []


def test_entry_metadata_is_valid_json_with_the_record(cache: WeightCache) -> None:
    _unused, entry = _stored(cache)
    meta = json.loads((entry / "zarr.json").read_text())
    record = meta["attributes"]["pullweights"]
    assert meta["node_type"] == "group" and record["key"] == entry.name
    assert record["kind"] == "weights" and record["parts"]["data"]["dtype"] == "float32"
    assert record["files"]["data/c/0"]["checksum"].startswith("crc32c:")
    assert record["origin"]["content"].startswith("sha256:")
