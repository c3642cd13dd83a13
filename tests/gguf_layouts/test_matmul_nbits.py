"""MatMulNBits layouts decode to exactly what gguf.quants.dequantize gives, for every format."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from gguf import GGMLQuantizationType, quants

from pullweights.errors import FormatError, IntegrityError, UnsupportedError
from pullweights.gguf.layouts import FORMATS, MatMulNBitsTransform
from pullweights.gguf.layouts.matmul_nbits import pack_codes, unpack_codes

from .blockdata import QUANTIZABLE, random_blocks

TYPES = sorted(FORMATS, key=lambda t: t.name)
T = GGMLQuantizationType


def shapes(block: int) -> list[tuple[int, int]]:
    """N = 1, K = one block, K = block * odd number, N odd."""
    return [(1, block), (3, block * 3), (4, block * 5), (1, block * 2)]


# quantized from random data where gguf.quants can quantize the type, random valid bytes always
CASES = [(t, False) for t in TYPES if t.name in QUANTIZABLE] + [(t, True) for t in TYPES]


@pytest.mark.parametrize(
    ("qtype", "from_bytes"), CASES, ids=[f"{t.name}-{'bytes' if b else 'q'}" for t, b in CASES]
)
def test_layout_decodes_to_gguf_dequantize_exactly(
    qtype: GGMLQuantizationType, from_bytes: bool
) -> None:
    fmt = FORMATS[qtype]
    for seed, shape in enumerate(shapes(fmt.block_elems)):
        raw = random_blocks(qtype, shape, seed=seed, from_bytes=from_bytes)
        t = MatMulNBitsTransform(qtype, shape)
        parts = t.apply(raw)
        assert set(parts) == set(t.outputs)
        for name, desc in t.outputs.items():
            assert parts[name].shape == desc.static_shape, name
            assert parts[name].dtype == desc.numpy_dtype, name
        # tolerance: none; scales, mins and codes reproduce the reference's float32 ops
        np.testing.assert_array_equal(t.dequantize(parts), quants.dequantize(raw, qtype))


@pytest.mark.parametrize("qtype", [T.Q4_K, T.Q8_0, T.Q6_K, T.IQ2_XS], ids=lambda t: t.name)
def test_row_groups_do_not_change_the_result(qtype: GGMLQuantizationType) -> None:
    shape = (7, 512)
    raw = random_blocks(qtype, shape, seed=3, from_bytes=True)
    whole = MatMulNBitsTransform(qtype, shape, group_bytes=1 << 30).apply(raw)
    tiny = MatMulNBitsTransform(qtype, shape, group_bytes=1).apply(raw.reshape(-1))
    assert whole.keys() == tiny.keys()
    for name in whole:
        np.testing.assert_array_equal(whole[name], tiny[name])


@pytest.mark.parametrize("qtype", [T.Q4_K, T.Q8_0, T.Q6_K, T.Q5_0, T.IQ2_XS], ids=lambda t: t.name)
def test_row_pieces_join_to_the_whole(qtype: GGMLQuantizationType) -> None:
    """``apply_rows`` on any run of raw rows gives exactly those rows of every part."""
    shape = (11, 512)
    raw = random_blocks(qtype, shape, seed=5, from_bytes=True).reshape(-1)
    t = MatMulNBitsTransform(qtype, shape)
    n, row_bytes = t.rows
    assert (n, row_bytes * n) == (11, raw.size)
    whole = t.apply(raw)
    cuts = [0, 1, 4, 9, 11]
    pieces = [
        t.apply_rows(raw[a * row_bytes : b * row_bytes], a, b) for a, b in itertools.pairwise(cuts)
    ]
    for name in whole:
        np.testing.assert_array_equal(np.concatenate([p[name] for p in pieces]), whole[name])


def test_attributes_describe_the_graph() -> None:
    t = MatMulNBitsTransform(T.Q4_K, (640, 1024))
    assert (t.n, t.k, t.bits, t.block_size, t.n_blocks) == (640, 1024, 4, 32, 32)
    assert t.has_mins and t.zero_point == 0 and t.accuracy_level == 4
    assert t.describe() == "MatMulNBits 4-bit b32 + mins (exact)"
    assert dict((k, v.static_shape) for k, v in t.outputs.items()) == {
        "B": (640, 32, 16),
        "scales": (640, 32),
        "zero_points": (640, 16),
        "mins": (640, 32),
    }
    q6 = MatMulNBitsTransform(T.Q6_K, (1, 256))
    assert (q6.bits, q6.block_size, q6.zero_point, q6.has_mins) == (8, 16, 32, False)
    assert "mins" not in q6.outputs
    assert q6.describe() == "MatMulNBits 8-bit b16 exact"


def test_odd_block_count_pads_the_packed_zero_points() -> None:
    t = MatMulNBitsTransform(T.Q4_0, (2, 32 * 3))
    parts = t.apply(random_blocks(T.Q4_0, (2, 96)))
    assert parts["zero_points"].shape == (2, 2)
    np.testing.assert_array_equal(parts["zero_points"], [[0x88, 0x08], [0x88, 0x08]])


def test_cache_params_name_type_and_shape() -> None:
    a = MatMulNBitsTransform(T.Q4_K, (256, 512))
    b = MatMulNBitsTransform(T.Q5_K, (256, 512))
    c = MatMulNBitsTransform(T.Q4_K, (512, 256))
    assert len({a.params, b.params, c.params}) == 3


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_pack_is_lsb_first_and_round_trips(bits: int) -> None:
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 1 << bits, size=(3, 64), dtype=np.uint8)
    packed = np.empty((3, 64 * bits // 8), np.uint8)
    pack_codes(codes, bits, packed)
    per = 8 // bits
    expect = sum(
        codes[:, i::per].astype(np.int64) << (i * bits) for i in range(per)
    )  # element j at bit offset j * bits
    np.testing.assert_array_equal(packed, expect)
    np.testing.assert_array_equal(unpack_codes(packed, bits), codes)


def test_errors_name_the_problem() -> None:
    with pytest.raises(UnsupportedError, match="F32"):
        MatMulNBitsTransform(T.F32, (4, 32))
    with pytest.raises(FormatError, match="2-D"):
        MatMulNBitsTransform(T.Q8_0, (2, 4, 32))
    with pytest.raises(FormatError, match="whole 256-element blocks"):
        MatMulNBitsTransform(T.Q4_K, (4, 640))
    t = MatMulNBitsTransform(T.Q8_0, (2, 64))
    with pytest.raises(IntegrityError, match="expected 136"):
        t.apply(np.zeros(135, np.uint8))
