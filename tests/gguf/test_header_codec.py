"""The encoded header (a header store's format): exact round trips of every value type
the parser produces, refusals of what it cannot hold, clear errors for damaged bytes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from pullweights.gguf.header import RawHeader, read_header
from pullweights.gguf.header_codec import MAGIC, decode_header, encode_header
from pullweights.sources import FileSource

from .gguf_files import write_sample


async def _parsed(path: Path) -> RawHeader:
    async with FileSource(path) as source:
        return await read_header(source)


def _assert_same(got: RawHeader, want: RawHeader) -> None:
    assert (got.version, got.end, got.bytes_read) == (want.version, want.end, want.bytes_read)
    assert got.tensor_infos == want.tensor_infos
    assert got.value_types == want.value_types and got.value_offsets == want.value_offsets
    assert list(got.metadata) == list(want.metadata)
    for key, value in want.metadata.items():
        other = got.metadata[key]
        assert type(other) is type(value), key
        if isinstance(value, np.ndarray):
            assert isinstance(other, np.ndarray)
            assert other.dtype == value.dtype and other.flags.writeable, key
            np.testing.assert_array_equal(other, value)
        elif isinstance(value, float) and math.isnan(value):
            assert math.isnan(other)  # type: ignore[arg-type]
        else:
            assert other == value, key


async def test_every_value_type_round_trips_exactly(tmp_path: Path) -> None:
    tokens = ("<pad>", "héllo", "", "▁the", "日本", "a b", "\t", "😀")
    write_sample(tmp_path / "m.gguf", tokens=tokens, nested=False, extra_string="x" * 5000)
    header = await _parsed(tmp_path / "m.gguf")
    header.metadata["t.nan"] = float("nan")  # what a float32 scalar may hold
    header.metadata["t.empty"] = []
    header.metadata["t.no_floats"] = np.zeros(0, np.float32)
    for key in ("t.nan", "t.empty", "t.no_floats"):
        header.value_types[key] = header.value_types["t.f32"]
        header.value_offsets[key] = 0
    data = encode_header(header)
    assert data is not None and data.startswith(MAGIC)
    _assert_same(decode_header(data), header)


async def test_what_the_format_cannot_hold_is_not_encoded(tmp_path: Path) -> None:
    write_sample(tmp_path / "nested.gguf")  # arrays of arrays
    assert encode_header(await _parsed(tmp_path / "nested.gguf")) is None
    write_sample(tmp_path / "nul.gguf", tokens=("a", "b\0c"), nested=False)  # NUL in a string
    assert encode_header(await _parsed(tmp_path / "nul.gguf")) is None


async def test_damaged_bytes_raise_value_error(tmp_path: Path) -> None:
    write_sample(tmp_path / "m.gguf", nested=False)
    data = encode_header(await _parsed(tmp_path / "m.gguf"))
    assert data is not None
    half = data[: len(data) // 2]
    for bad in (b"", b"PWGGUFH0" + data[8:], data[:12], half, data[:16] + b"[" + data[17:]):
        with pytest.raises(ValueError):
            decode_header(bad)
