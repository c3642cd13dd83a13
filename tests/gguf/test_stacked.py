"""Stacked weights: several tensors' rows as one payload, exactly the separate layouts."""

from __future__ import annotations

import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType
from gguf.quants import quantize

from pullweights.errors import FormatError, SourceError, UnsupportedError
from pullweights.gguf.layouts import choose_transform
from pullweights.gguf.reader import GGUFTensor
from pullweights.gguf.stacked import stack_of, stackable, stacked_payload, stacked_transform
from pullweights.sources import ConcatSource, MemorySource, SliceSource

Q = GGMLQuantizationType


def _laid_out(
    arrays: list[np.ndarray],
    ggml_type: Q | list[Q],
    shapes: list[tuple[int, ...]],
    gap: int,
    kind: str,
) -> tuple[MemorySource, list[GGUFTensor]]:
    """Tensors of these bytes, types and shapes in one source, ``gap`` bytes apart, named
    ``blk.0.t{i}.{kind}``."""
    types = ggml_type if isinstance(ggml_type, list) else [ggml_type] * len(arrays)
    data = bytearray()
    tensors = []
    spans = []
    for arr in arrays:
        data += b"\x55" * gap
        spans.append((len(data), arr.nbytes))
        data += arr.tobytes()
    source = MemorySource(bytes(data), name="model.gguf")
    for i, (t, shape, (offset, length)) in enumerate(zip(types, shapes, spans, strict=True)):
        tensors.append(GGUFTensor(f"blk.0.t{i}.{kind}", t, shape, offset, length, source))
    return source, tensors


def _tensors(
    ggml_type: Q | list[Q], rows: list[int], k: int, gap: int
) -> tuple[MemorySource, list[GGUFTensor]]:
    """Quantized tensors of ``rows`` x ``k`` in one source, ``gap`` bytes apart."""
    rng = np.random.default_rng(7)
    types = ggml_type if isinstance(ggml_type, list) else [ggml_type] * len(rows)
    blobs = [
        quantize(rng.standard_normal((n, k)).astype(np.float32), t)
        for n, t in zip(rows, types, strict=True)
    ]
    return _laid_out(blobs, ggml_type, [(n, k) for n in rows], gap, "weight")


TYPES = [Q.Q8_0, Q.Q5_0, Q.Q5_1, [Q.Q5_0, Q.Q5_0, Q.Q8_0], [Q.Q5_1, Q.Q8_0, Q.Q5_0]]


@pytest.mark.parametrize(
    "ggml_type", TYPES, ids=lambda t: "+".join(x.name for x in t) if isinstance(t, list) else t.name
)
@pytest.mark.parametrize("gap", [0, 32], ids=["adjacent", "apart"])
async def test_a_stack_is_the_separate_layouts_row_after_row(
    ggml_type: Q | list[Q], gap: int
) -> None:
    """Read through its source and transformed, a stack of three tensors (zero points and,
    for Q5_1, mins) equals each tensor's own layout, concatenated by rows, bit for bit;
    of mixed 8-bit types (a block's Q5_0 Q/K and Q8_0 V), each row keeps its own type's
    zero point and rows without mins get 0. Tensors back to back are one range of the
    file (mapped without a copy); tensors apart are slices of it, registered under the
    file as their model source."""
    source, tensors = _tensors(ggml_type, [64, 16, 16], 64, gap)
    transform = stacked_transform(tensors)
    assert transform is not None and (transform.n, transform.k) == (96, 64)
    payload = stacked_payload(tensors, transform)
    assert payload.label == "blk.0.t0.weight+blk.0.t1.weight+blk.0.t2.weight"
    if gap == 0:
        assert payload.source is source and payload.offset == tensors[0].offset
        assert payload.source.map(payload.offset, payload.length) is not None
    else:
        assert isinstance(payload.source, ConcatSource)
        assert payload.source.map(payload.offset, payload.length) is None  # straddles
        assert payload.source.model_source is source
    raw = bytearray(payload.length)
    await payload.source.read_into(payload.offset, memoryview(raw))
    stacked = transform.apply(np.frombuffer(bytes(raw), np.uint8))
    separate = []
    for t in tensors:
        own = choose_transform(t.ggml_type, t.shape, "matmul")
        assert own is not None
        piece = bytearray(t.nbytes)
        await source.read_into(t.offset, memoryview(piece))
        separate.append(own.apply(np.frombuffer(bytes(piece), np.uint8)))
    assert set(stacked) == set().union(*separate)
    for s in separate:
        s.setdefault("mins", np.zeros_like(s["scales"]))
    for part, arr in stacked.items():
        np.testing.assert_array_equal(arr, np.concatenate([s[part] for s in separate]), part)


def test_what_does_not_stack() -> None:
    """Mixed types, other row lengths, other sources, one tensor, or a float type."""
    _, q8 = _tensors(Q.Q8_0, [32, 32], 64, 0)
    _, q5 = _tensors(Q.Q5_0, [32], 64, 0)
    _, q4_q8 = _tensors([Q.Q4_0, Q.Q8_0], [32, 32], 64, 0)
    assert stacked_transform(q4_q8) is None  # 4-bit and 8-bit layouts
    _, wide = _tensors(Q.Q8_0, [32], 128, 0)
    assert stackable(q8) and stacked_transform(q8) is not None
    assert not stackable([q8[0], q5[0]])  # type (as a view; as a matmul they stack)
    assert not stackable([q8[0], wide[0]])  # row length
    other_source = _tensors(Q.Q8_0, [32], 64, 0)[1][0]
    assert not stackable([q8[0], other_source])
    assert stacked_transform(q8[:1]) is None
    f32 = [GGUFTensor(f"f{i}", Q.F32, (4, 8), 128 * i, 128, q8[0].source) for i in range(2)]
    assert stackable(f32) and stacked_transform(f32) is None  # a view, not MatMulNBits
    with pytest.raises(FormatError, match="cannot be stacked"):
        stacked_payload([q8[0], q5[0]], stacked_transform(q8))  # type: ignore[arg-type]


def test_the_stacks_of_a_block() -> None:
    assert stack_of("blk.12.attn_v.weight") == [
        "blk.12.attn_q.weight",
        "blk.12.attn_k.weight",
        "blk.12.attn_v.weight",
    ]
    for name in ("blk.0.attn_q.bias", "blk.0.ffn_gate.weight", "token_embd.weight", "attn_q"):
        assert stack_of(name) is None, name


async def test_a_slice_reads_maps_and_releases_through_its_parent() -> None:
    parent = MemorySource(bytes(range(100)), name="p")
    piece = SliceSource(parent, 10, 20)
    assert (piece.size, piece.model_source, piece.parts) == (20, parent, [parent])
    assert piece.identity == parent.identity + "[10:30]" and piece.local
    assert await piece.read(5, 3) == bytes([15, 16, 17])
    mapped = piece.map(0, 20)
    assert mapped is not None and bytes(mapped) == bytes(range(10, 30))
    piece.release(-5, 100)  # clipped to the slice; never an error
    with pytest.raises(SourceError, match="outside"):
        await piece.read(15, 10)
    with pytest.raises(SourceError, match="outside"):
        SliceSource(parent, 90, 20)
    await piece.aclose()  # the parent stays open
    assert await parent.read(0, 2) == b"\x00\x01"
    mixed = ConcatSource([piece, MemorySource(b"xyz")])
    assert mixed.model_source is mixed  # parts of two models: its own


@pytest.mark.parametrize("gap", [0, 32], ids=["adjacent", "apart"])
async def test_stacked_vectors_are_viewed_as_one(gap: int) -> None:
    """F32 biases stack without a transform: one float32 vector of their values in
    order; a quantized type needs a transform."""
    values = [np.arange(n, dtype=np.float32) + 100 * i for i, n in enumerate((8, 4, 4))]
    _, biases = _laid_out(values, Q.F32, [(v.size,) for v in values], gap, "bias")
    payload = stacked_payload(biases)
    assert payload.transform is None and payload.outputs["data"].static_shape == (16,)
    raw = await payload.source.read(payload.offset, payload.length)
    np.testing.assert_array_equal(np.frombuffer(raw, np.float32), np.concatenate(values))
    _, q8 = _tensors(Q.Q8_0, [32, 32], 64, 0)
    with pytest.raises(UnsupportedError, match="needs a layout transform"):
        stacked_payload(q8)
