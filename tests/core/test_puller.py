"""The weight loader pulls and transforms each payload once per graph."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType

import pullweights as pw
import pullweights.runtime.puller as puller_module
from pullweights.cache import WeightCache
from pullweights.descriptor import TensorDescriptor
from pullweights.gguf.layouts import MatMulNBitsTransform
from pullweights.runtime.puller import WeightPuller
from pullweights.weights import Payload, Transform
from tests.gguf_layouts.blockdata import random_blocks


class CountingSplit(Transform):
    """Splits 8 bytes into two parts and counts its calls."""

    name = "counting-split"

    def __init__(self) -> None:
        self.calls = 0

    @property
    def outputs(self) -> Mapping[str, TensorDescriptor]:
        return {"lo": TensorDescriptor("uint8", [4]), "hi": TensorDescriptor("uint8", [4])}

    def apply(self, raw: np.ndarray) -> dict[str, np.ndarray]:
        self.calls += 1
        return {"lo": raw[:4].copy(), "hi": raw[4:].copy()}


async def test_payload_split_across_two_loads_is_transformed_once() -> None:
    transform = CountingSplit()
    payload = Payload(pw.MemorySource(bytes(range(8))), 0, 8, transform=transform)
    loader = WeightPuller(None)
    first = await loader.pull({"lo": payload.ref("lo")})
    second = await loader.pull({"hi": payload.ref("hi"), "lo": payload.ref("lo")})
    assert transform.calls == 1
    np.testing.assert_array_equal(first["lo"], [0, 1, 2, 3])
    np.testing.assert_array_equal(second["hi"], [4, 5, 6, 7])
    assert second["lo"] is first["lo"]


class RecordingSource(pw.ByteSource):
    """In-memory bytes that cannot be mapped; records every read's length."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.size = len(data)
        self.name = "recording"
        self.identity = f"recording:{id(self)}"
        self.reads: list[int] = []

    async def read_into(self, offset: int, out: memoryview) -> None:
        self.check_range(offset, len(out))
        self.reads.append(len(out))
        out[:] = self._data[offset : offset + len(out)]


async def test_large_transform_streams_in_row_groups_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row-wise transform of an unmappable payload is read, transformed and written a
    row group at a time (never the whole tensor in memory), with the same bytes as a
    whole ``apply``."""
    monkeypatch.setattr(puller_module, "ROW_GROUP_BYTES", 64 << 10)
    shape = (512, 1024)
    raw = random_blocks(GGMLQuantizationType.Q4_K, shape, seed=1, from_bytes=True).reshape(-1)
    t = MatMulNBitsTransform(GGMLQuantizationType.Q4_K, shape)
    source = RecordingSource(raw.tobytes())
    payload = Payload(source, 0, raw.size, transform=t)
    puller = WeightPuller(WeightCache(tmp_path / "cache"))
    got = await puller.pull({name: payload.ref(name) for name in t.outputs})
    expected = t.apply(raw)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])
    assert len(source.reads) > 4 and max(source.reads) <= 64 << 10
    assert sum(source.reads) == raw.size
    assert puller.transformed == 1
