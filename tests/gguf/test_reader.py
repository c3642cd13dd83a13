"""The lazy GGUF reader against gguf.GGUFReader (an independent parser) on files it wrote."""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from gguf import GGUFReader
from gguf.constants import GGMLQuantizationType, GGUFValueType

from pullweights.bench.serve import free_port
from pullweights.descriptor import TensorDescriptor
from pullweights.errors import FetchError, SourceError, UnsupportedError
from pullweights.gguf import GGUFFile, open_gguf
from pullweights.gguf.header import INITIAL_WINDOW, MAX_WINDOW
from pullweights.sources import ByteSource, ConcatSource, FileSource, HttpSettings, MemorySource
from pullweights.weights import Transform

from .gguf_files import NESTED_INTS, NESTED_STRINGS, write_sample


class CountingSource(ByteSource):
    """Forwards to another source and records every range asked of it."""

    def __init__(self, inner: ByteSource) -> None:
        self.inner = inner
        self.size = inner.size
        self.name = inner.name
        self.identity = inner.identity
        self.requests: list[tuple[int, int]] = []

    async def read_into(self, offset: int, out: memoryview) -> None:
        self.requests.append((offset, len(out)))
        await self.inner.read_into(offset, out)

    @property
    def total(self) -> int:
        return sum(n for _, n in self.requests)


class RawBytes(Transform):
    """A stand-in layout transform: the payload's bytes as they are."""

    name = "test-raw"

    def __init__(self, n: int) -> None:
        self.n = n

    @property
    def outputs(self) -> Mapping[str, TensorDescriptor]:
        return {"data": TensorDescriptor("uint8", (self.n,))}

    def apply(self, raw: npt.NDArray[np.uint8]) -> dict[str, np.ndarray]:
        return {"data": raw}


@pytest.fixture
def sample(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path / "sample.gguf"
    return path, write_sample(path)


def split_into_parts(path: Path, cuts: list[int]) -> list[Path]:
    data = path.read_bytes()
    bounds = [0, *cuts, len(data)]
    parts = []
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        part = path.with_name(f"{path.name}.part{i:02d}")
        part.write_bytes(data[a:b])
        parts.append(part)
    return parts


def open_source(kind: str, path: Path) -> ByteSource:
    if kind == "file":
        return FileSource(path)
    if kind == "memory":
        return MemorySource(path.read_bytes(), name=path.name)
    ref = GGUFReader(path)
    big = next(t for t in ref.tensors if t.name == "f32.big")
    # One cut inside the first metadata key, one inside the f32.big tensor's data.
    return ConcatSource.from_paths(split_into_parts(path, [37, big.data_offset + 1001]))


def as_plain(value: object) -> object:
    return value.tolist() if isinstance(value, np.ndarray) else value


async def assert_matches_reference(gguf: GGUFFile, path: Path) -> None:
    ref = GGUFReader(path)
    keys = [k for k in ref.fields if not k.startswith("GGUF.")]
    assert list(gguf.metadata) == keys
    for key in keys:
        field = ref.fields[key]
        ours = gguf.metadata[key]
        if field.types[0] == GGUFValueType.ARRAY:
            assert gguf.value_types[key] == tuple(field.types[:2]), key
            if field.types[1] == GGUFValueType.ARRAY:
                continue  # GGUFReader flattens nested arrays; checked against the input
            if field.types[1] != GGUFValueType.STRING:
                assert isinstance(ours, np.ndarray), key
        else:
            assert gguf.value_types[key] == (field.types[0],), key
        assert as_plain(ours) == field.contents(), key
    assert gguf.alignment == ref.alignment
    assert gguf.data_offset == ref.data_offset
    assert list(gguf.tensors) == [t.name for t in ref.tensors]
    for rt in ref.tensors:
        t = gguf.tensors[rt.name]
        assert t.ggml_type == rt.tensor_type
        assert t.shape == tuple(reversed(rt.shape.tolist()))  # GGUFReader: innermost first
        assert t.offset == rt.data_offset
        assert t.nbytes == rt.n_bytes
        assert await gguf.source.read(t.offset, t.nbytes) == rt.data.tobytes()


@pytest.mark.parametrize("kind", ["file", "memory", "concat"])
async def test_matches_gguf_reader(sample: tuple[Path, dict[str, np.ndarray]], kind: str) -> None:
    path, arrays = sample
    source = open_source(kind, path)
    async with source:
        gguf = await GGUFFile.open(source)
        await assert_matches_reference(gguf, path)
        assert gguf.version == 3
        assert gguf.architecture == "testarch"
        assert [as_plain(v) for v in gguf.metadata["t.nested"]] == NESTED_INTS  # type: ignore[attr-defined]
        assert gguf.metadata["t.nested_str"] == NESTED_STRINGS
        assert gguf.get("missing", 7) == 7
        assert gguf.metadata["t.u64"] == 2**63 + 5
        assert gguf.metadata["t.true"] is True
        assert gguf.metadata["t.str"] == "grüße ✓"
        assert all(gguf.tensors[name].source is source for name in arrays)
        if kind == "concat":
            big = gguf.tensors["f32.big"]
            assert source.map(big.offset, big.nbytes) is None  # straddles two parts


async def test_shapes_types_and_raw_payloads(sample: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, arrays = sample
    async with await open_gguf(path) as gguf:
        types = {n: t.ggml_type for n, t in gguf.tensors.items()}
        assert types["q8.w"] == GGMLQuantizationType.Q8_0
        assert types["q4k.w"] == GGMLQuantizationType.Q4_K
        assert gguf.tensors["q8.w"].shape == (3, 64)
        assert gguf.tensors["q4k.w"].shape == (3, 512)
        assert gguf.tensors["f32.3d"].shape == (2, 3, 5)
        for name in ("f32.odd", "f16.vec", "f32.3d", "f32.big"):
            t = gguf.tensors[name]
            payload = t.payload()
            desc = payload.outputs["data"]
            assert payload.label == name
            assert desc.static_shape == arrays[name].shape
            assert desc.numpy_dtype == arrays[name].dtype
            raw = await gguf.source.read(payload.offset, payload.length)
            got = np.frombuffer(raw, arrays[name].dtype).reshape(arrays[name].shape)
            np.testing.assert_array_equal(got, arrays[name])
        q8 = gguf.tensors["q8.w"]
        assert await gguf.source.read(q8.offset, q8.nbytes) == arrays["q8.w"].tobytes()
        with pytest.raises(UnsupportedError, match=r"'q8\.w' is Q8_0"):
            q8.payload()
        payload = q8.payload(RawBytes(q8.nbytes))
        assert (payload.offset, payload.length, payload.label) == (q8.offset, q8.nbytes, "q8.w")


async def test_open_reads_only_the_header(sample: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, _ = sample
    counting = CountingSource(MemorySource(path.read_bytes()))
    gguf = await GGUFFile.open(counting)
    assert counting.size > gguf.data_offset + 4 * INITIAL_WINDOW  # the data dwarfs the header
    assert gguf.data_offset < INITIAL_WINDOW
    assert counting.requests == [(0, INITIAL_WINDOW)]
    assert gguf.header_bytes_read == INITIAL_WINDOW


async def test_large_header_is_read_in_bounded_windows(tmp_path: Path) -> None:
    path = tmp_path / "vocab.gguf"
    tokens = [f"tok{i}" + "é" * (i % 5) for i in range(30_000)]
    template = "{% for m in messages %}" * 15_000  # one string longer than the first window
    write_sample(path, big_rows=2048, tokens=tokens, extra_string=template)
    counting = CountingSource(FileSource(path))
    async with counting:
        gguf = await GGUFFile.open(counting)
        assert gguf.metadata["tokenizer.ggml.tokens"] == tokens
        assert gguf.metadata["t.long_str"] == template
        assert gguf.data_offset > 4 * INITIAL_WINDOW
        assert all(offset < gguf.data_offset for offset, _ in counting.requests)
        assert counting.total < gguf.data_offset + MAX_WINDOW < counting.size
        await assert_matches_reference(gguf, path)


async def test_custom_alignment(tmp_path: Path) -> None:
    path = tmp_path / "aligned.gguf"
    write_sample(path, alignment=64)
    async with await open_gguf(str(path)) as gguf:
        assert gguf.alignment == 64
        assert all(t.offset % 64 == 0 for t in gguf.tensors.values())
        await assert_matches_reference(gguf, path)


async def test_open_gguf_accepts_paths_parts_and_sources(
    sample: tuple[Path, dict[str, np.ndarray]],
) -> None:
    path, _ = sample
    parts = split_into_parts(path, [100, 5000])
    async with await open_gguf([str(p) for p in parts]) as gguf:
        assert isinstance(gguf.source, ConcatSource)
        assert len(gguf.source.parts) == 3
        await assert_matches_reference(gguf, path)
    async with await open_gguf([os.fspath(path)]) as gguf:
        assert isinstance(gguf.source, FileSource)
    async with await open_gguf(path) as gguf:
        file_source = gguf.source
    assert isinstance(file_source, FileSource)
    with pytest.raises(SourceError, match="closed"):
        file_source.map(0, 4)  # open_gguf opened it, so closing the file closed it

    async with FileSource(path) as passed_in:
        async with await open_gguf(passed_in) as gguf:
            assert gguf.source is passed_in
        assert await passed_in.read(0, 4) == b"GGUF"  # a source passed in stays open


async def test_open_gguf_rejects_remote_parts_unreachable_urls_and_missing_files(
    tmp_path: Path,
) -> None:
    port = free_port()  # a loopback port nobody listens on
    for url in (f"http://127.0.0.1:{port}/m.gguf", f"HTTP://127.0.0.1:{port}/m.gguf"):
        with pytest.raises(FetchError):
            await open_gguf(url, http=HttpSettings(retries=0, connect_timeout=2.0))
    with pytest.raises(UnsupportedError, match="URL"):
        await open_gguf([str(tmp_path / "a"), f"http://127.0.0.1:{port}/part1"])
    with pytest.raises(SourceError, match="cannot open"):
        await open_gguf(tmp_path / "missing.gguf")
    with pytest.raises(UnsupportedError, match="empty"):
        await open_gguf([])
