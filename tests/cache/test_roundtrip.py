"""What goes into the cache comes back bit for bit, as zero-copy maps, readable by zarr."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import zarr

from pullweights.cache import WeightCache
from pullweights.descriptor import TensorDescriptor
from pullweights.dtypes import DATA_TYPES
from pullweights.sources.memory import MemorySource
from pullweights.weights import Payload, Transform
from tests.cache.payloads import entry_path, leftovers, raw_payload, split_payload

SHAPES = [(), (0,), (1,), (3, 0, 2), (7,), (5, 7), (2, 3, 4)]
MIB = 1 << 20


def _sample(dtype: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, int(np.prod(shape)) * np.dtype(dtype).itemsize, dtype=np.uint8)
    if dtype == "bool":
        raw &= 1  # only 0 and 1 are valid booleans
    return raw.view(dtype).reshape(shape)


def _zarr_arrays(entry: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(entry, mode="r")
    return {name: np.asarray(arr[...]) for name, arr in group.arrays()}


@pytest.mark.parametrize("dtype", DATA_TYPES)
async def test_raw_roundtrip_every_dtype_and_shape(cache: WeightCache, dtype: str) -> None:
    for i, shape in enumerate(SHAPES):
        data = _sample(dtype, shape, i)
        payload = raw_payload(data, f"{dtype}{shape}")
        assert cache.get(payload) is None
        async with cache.writer(payload) as w:
            out = w.array()
            if out.size:
                await payload.source.read_into(payload.offset, memoryview(out).cast("B"))
        assert w.result is not None
        for got in (w.result["data"], cache.get(payload)["data"]):  # type: ignore[index]
            assert got.dtype == data.dtype and got.shape == data.shape
            assert not got.flags.writeable
            np.testing.assert_array_equal(got, data)
        via_zarr = _zarr_arrays(entry_path(cache, payload))["data"]
        assert via_zarr.dtype == data.dtype and via_zarr.shape == data.shape
        np.testing.assert_array_equal(via_zarr, data)
        assert cache.contains(payload)
    assert cache.verify() == []
    assert leftovers(cache.root) == []


def test_chunk_file_is_the_raw_array(cache: WeightCache) -> None:
    data = _sample("float16", (5, 7), 1)
    payload = raw_payload(data)
    with cache.writer(payload) as w:
        w.write("data", data)
    entry = entry_path(cache, payload)
    assert (entry / "data" / "c" / "0" / "0").read_bytes() == data.tobytes()
    scalar = raw_payload(np.asarray(3.5, np.float32))
    with cache.writer(scalar) as w:
        w.write("data", np.asarray(3.5, np.float32))
    scalar_entry = entry_path(cache, scalar)
    assert (scalar_entry / "data" / "c").read_bytes() == np.float32(3.5).tobytes()


async def test_multi_part_transform_roundtrip(cache: WeightCache) -> None:
    payload, raw = split_payload(256)
    assert payload.transform is not None
    expected = payload.transform.apply(raw)
    stored = await cache.put(payload, expected)
    fresh = WeightCache(cache.root).get(payload)
    via_zarr = _zarr_arrays(entry_path(cache, payload))
    assert fresh is not None and set(fresh) == set(via_zarr) == {"lo", "hi", "total", "none"}
    for name, want in expected.items():
        for got in (stored[name], fresh[name], via_zarr[name]):
            assert got.dtype == want.dtype and got.shape == want.shape, name
            np.testing.assert_array_equal(got, want)
    # Independent of the transform: the nibbles recombine into the source bytes.
    np.testing.assert_array_equal((fresh["hi"] << 4 | fresh["lo"]).reshape(-1), raw)
    [info] = cache.entries()
    assert info.key == cache.content_key(payload) and info.label == "split"
    assert info.transform == "nibble-split v1" and info.source == payload.source.identity
    assert info.nbytes == 2 * 256 + 8
    assert info.parts["total"] == TensorDescriptor("int64", ())


async def test_transform_version_is_a_different_entry(cache: WeightCache) -> None:
    payload, raw = split_payload(64)
    assert payload.transform is not None
    await cache.put(payload, payload.transform.apply(raw))

    class Bumped(type(payload.transform)):  # type: ignore[misc]
        version = 2

    bumped = Payload(payload.source, 0, 64, transform=Bumped(64), label="split")
    assert bumped.key != payload.key
    assert cache.get(bumped) is None and cache.get(payload) is not None


def test_read_is_zero_copy_for_onnxruntime(cache: WeightCache) -> None:
    data = _sample("float32", (64, 32), 3)
    payload = raw_payload(data)
    with cache.writer(payload) as w:
        w.write("data", data)
    arr = cache.get(payload)["data"]  # type: ignore[index]
    base = arr
    while isinstance(base, np.ndarray | memoryview):
        base = base.base if isinstance(base, np.ndarray) else base.obj
    assert isinstance(base, mmap.mmap)
    value = ort.OrtValue.ortvalue_from_numpy(arr)
    assert value.data_ptr() == arr.ctypes.data
    np.testing.assert_array_equal(value.numpy(), data)


def _memory() -> dict[str, int]:
    """``/proc/self/smaps_rollup`` in bytes."""
    values: dict[str, int] = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            name, _, rest = line.partition(":")
            fields = rest.split()
            if len(fields) == 2 and fields[1] == "kB":
                values[name] = int(fields[0]) * 1024
    return values


class _Filled(Transform):
    """A 64 MiB float32 output the test writes in place (apply is never called)."""

    name = "filled"

    @property
    def outputs(self) -> dict[str, TensorDescriptor]:
        return {"data": TensorDescriptor("float32", (16 * MIB,))}

    def apply(self, raw: np.ndarray) -> dict[str, np.ndarray]:
        raise AssertionError("not used")


def test_reading_64_mib_adds_no_anonymous_memory(tmp_path: Path) -> None:
    cache = WeightCache(tmp_path / "cache", durable=True)  # fsync: the pages are clean
    payload = Payload(MemorySource(b"x"), 0, 1, transform=_Filled())
    with cache.writer(payload) as w:
        out = w.array()
        for start in range(0, out.size, MIB):  # 4 MiB at a time, no big temporary
            out[start : start + MIB] = np.arange(start, start + MIB, dtype=np.float32)
        del out
    w.result = None
    before = _memory()
    arr = cache.get(payload)["data"]  # type: ignore[index]
    total = float(arr.sum(dtype=np.float64))  # touches every page
    after = _memory()
    n = 16 * MIB
    assert total == pytest.approx(n * (n - 1) / 2, rel=1e-6)
    grown = {k: after[k] - before[k] for k in ("Anonymous", "Private_Dirty", "Pss_File", "Rss")}
    # File-backed clean pages: they count as Rss and Pss_File (and as Private_Clean when no
    # other process maps them), never as anonymous or dirty memory.
    assert grown["Anonymous"] < 0.1 * 64 * MIB, grown
    assert grown["Private_Dirty"] < 0.1 * 64 * MIB, grown
    assert grown["Pss_File"] > 0.9 * 64 * MIB, grown  # the pages really were touched
    # The check can fail: zarr's own read path copies the data into anonymous memory.
    before = _memory()
    copy = _zarr_arrays(entry_path(cache, payload))["data"]
    assert _memory()["Anonymous"] - before["Anonymous"] > 0.9 * 64 * MIB
    np.testing.assert_array_equal(copy[:: MIB // 4], arr[:: MIB // 4])


def test_write_then_map_checksums_the_final_bytes(cache: WeightCache) -> None:
    data = _sample("int32", (64,), 5)
    payload = raw_payload(data)
    with cache.writer(payload) as w:
        w.write("data", data)  # pwrite path, checksummed from memory...
        w.array()[3] = -1  # ...then changed through the map: hashed again at commit
    want = data.copy()
    want[3] = -1
    got = cache.get(payload)
    assert got is not None
    np.testing.assert_array_equal(got["data"], want)
    assert cache.verify() == []
