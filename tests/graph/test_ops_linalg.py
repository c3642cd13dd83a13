"""matmul, gemm and MatMulNBits against numpy (dequantized weights for MatMulNBits)."""

from __future__ import annotations

import numpy as np
import pytest

from pullweights import GraphBuilder, MemorySource, Operand, raw_weight
from tests.graph.common import (
    TOLERANCE,
    Tolerance,
    assert_close,
    builder,
    declare,
    pack_bits,
    random,
    run_op,
)

# float32 products of K <= 64 terms of size ~1: a few ulps of the largest partial sum.
MATMUL_TOL: dict[str, Tolerance] = {
    "float32": {"rtol": 1e-5, "atol": 1e-5},
    "float16": {"rtol": 2e-3, "atol": 1e-2},
}


@pytest.mark.parametrize(
    ("shape_a", "shape_b"),
    [
        ((3, 5), (5, 4)),
        ((2, 3, 5), (5, 4)),
        ((2, 1, 3, 5), (4, 5, 2)),
        ((1, 5), (5, 1)),
        ((0, 5), (5, 3)),
        ((3, 0), (0, 4)),
    ],
)
async def test_matmul_float32(shape_a: tuple[int, ...], shape_b: tuple[int, ...]) -> None:
    rng = np.random.default_rng(20)
    a, b = random(rng, shape_a, "float32"), random(rng, shape_b, "float32")
    got = await run_op(lambda g, x, y: g.matmul(x, y), a, b)
    assert_close(got, a.astype(np.float64) @ b, **MATMUL_TOL["float32"])


@pytest.mark.parametrize("dtype", ["float16", "int64", "int32", "uint32"])
async def test_matmul_other_types(dtype: str) -> None:
    rng = np.random.default_rng(21)
    a, b = random(rng, (2, 3, 6), dtype, 0, 5), random(rng, (6, 4), dtype, 0, 5)
    got = await run_op(lambda g, x, y: g.matmul(x, y), a, b)
    if dtype == "float16":
        assert_close(got, a.astype(np.float64) @ b, dtype=dtype, **MATMUL_TOL[dtype])
    else:
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, a @ b)


@pytest.mark.parametrize("a_transpose", [False, True])
@pytest.mark.parametrize("b_transpose", [False, True])
@pytest.mark.parametrize("c_shape", [None, (4,), (3, 4), (1, 4), (3, 1), ()])
async def test_gemm(a_transpose: bool, b_transpose: bool, c_shape: tuple[int, ...] | None) -> None:
    rng = np.random.default_rng(22)
    m, k, n = 3, 5, 4
    a = random(rng, (k, m) if a_transpose else (m, k), "float32")
    b = random(rng, (n, k) if b_transpose else (k, n), "float32")
    arrays = [a, b] if c_shape is None else [a, b, random(rng, c_shape, "float32")]
    alpha, beta = 0.5, 2.0

    def make(g: GraphBuilder, x: Operand, y: Operand, c: Operand | None = None) -> Operand:
        return g.gemm(
            x, y, c, alpha=alpha, beta=beta, a_transpose=a_transpose, b_transpose=b_transpose
        )

    got = await run_op(make, *arrays)
    a64 = a.T.astype(np.float64) if a_transpose else a.astype(np.float64)
    b64 = b.T.astype(np.float64) if b_transpose else b.astype(np.float64)
    expected = alpha * a64 @ b64 + (0 if c_shape is None else beta * arrays[2])
    assert_close(got, expected, **MATMUL_TOL["float32"])


async def test_gemm_float16_defaults() -> None:
    rng = np.random.default_rng(23)
    a, b, c = (random(rng, s, "float16") for s in ((3, 8), (8, 2), (2,)))
    got = await run_op(lambda g, x, y, z: g.gemm(x, y, z), a, b, c)
    assert_close(got, a.astype(np.float64) @ b + c, dtype="float16", **MATMUL_TOL["float16"])


# --------------------------------------------------------------------------- MatMulNBits
class QuantizedMatrix:
    """A random ``[n, k]`` matrix in MatMulNBits layout, and its float64 dequantization."""

    def __init__(
        self, rng: np.random.Generator, n: int, k: int, bits: int, block: int, dtype: str
    ) -> None:
        blocks = -(-k // block)
        q = rng.integers(0, 2**bits, (n, blocks * block))
        self.b = pack_bits(q, bits).reshape(n, blocks, block * bits // 8)
        self.scales = (rng.uniform(0.01, 0.1, (n, blocks))).astype(dtype)
        zp = rng.integers(0, 2**bits, (n, blocks))
        per_byte = 8 // bits
        padded = np.zeros((n, -(-blocks // per_byte) * per_byte), np.int64)
        padded[:, :blocks] = zp
        self.zero_points = pack_bits(padded, bits)
        self._q, self._zp, self._default_zp = q, zp, 2 ** (bits - 1)
        self.block, self.k = block, k

    def dequantized(self, with_zero_points: bool) -> np.ndarray:
        zp = self._zp if with_zero_points else np.full_like(self._zp, self._default_zp)
        w = (self._q - np.repeat(zp, self.block, 1)) * np.repeat(
            self.scales.astype(np.float64), self.block, 1
        )
        return np.asarray(w[:, : self.k])


def int8_activation_bound(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Worst-case error of accuracy_level 4, which rounds each row of ``x`` to int8 with
    scale max|row| / 127: each element moves by at most half a step."""
    step = np.abs(x).max(axis=-1, keepdims=True) / 127
    return (step / 2) @ np.abs(w).sum(axis=1, keepdims=True).T


@pytest.mark.parametrize("bits", [4, 8, 2])
@pytest.mark.parametrize("with_zero_points", [True, False])
@pytest.mark.parametrize(("k", "block"), [(64, 32), (48, 16), (40, 32)])
@pytest.mark.parametrize("accuracy_level", [0, 4])
async def test_matmul_nbits_constants(
    bits: int, with_zero_points: bool, k: int, block: int, accuracy_level: int
) -> None:
    rng = np.random.default_rng(24)
    n = 24
    w = QuantizedMatrix(rng, n, k, bits, block, "float32")
    x = random(rng, (2, 3, k), "float32")
    b = builder()
    a = declare(b, "a", x)
    zp = b.constant(w.zero_points) if with_zero_points else None
    y = b.matmul_nbits(
        a,
        b.constant(w.b),
        b.constant(w.scales),
        zp,
        k=k,
        n=n,
        bits=bits,
        block_size=block,
        accuracy_level=accuracy_level,
    )
    assert y.shape == (2, 3, n)
    graph = await b.build({"y": y})
    got = (await graph.compute({"a": x}))["y"]
    wd = w.dequantized(with_zero_points)
    expected = x.astype(np.float64) @ wd.T
    if accuracy_level == 0:
        # Exact float32 arithmetic on exactly representable weights.
        assert_close(got, expected, rtol=1e-5, atol=1e-4 * np.abs(expected).max())
    else:
        # int8 activations: bounded by half an int8 step per element, times |w| summed.
        bound = int8_activation_bound(x.reshape(-1, k).astype(np.float64), wd).reshape(got.shape)
        err = np.abs(got - expected)
        assert np.all(err <= bound + 1e-4), f"max excess {np.max(err - bound)}"


async def test_matmul_nbits_raw_weights_over_memory_source() -> None:
    rng = np.random.default_rng(25)
    n, k, block = 16, 64, 32
    w = QuantizedMatrix(rng, n, k, 4, block, "float32")
    blob = w.b.tobytes() + w.scales.tobytes() + w.zero_points.tobytes()
    src = MemorySource(blob, name="nbits.bin")
    b_ref = raw_weight(src, 0, "uint8", w.b.shape)
    s_ref = raw_weight(src, w.b.nbytes, "float32", w.scales.shape)
    z_ref = raw_weight(src, w.b.nbytes + w.scales.nbytes, "uint8", w.zero_points.shape)
    x = random(rng, (5, k), "float32")
    b = builder()
    a = declare(b, "a", x)
    q = b.input("b", b_ref.descriptor, weight=b_ref)
    s = b.input("s", s_ref.descriptor, weight=s_ref)
    z = b.input("z", z_ref.descriptor, weight=z_ref)
    y = b.matmul_nbits(a, q, s, z, k=k, n=n, bits=4, block_size=block, accuracy_level=0)
    graph = await b.build({"y": y})
    assert list(graph.inputs) == ["a"]  # the weights are initializers, not inputs
    got = (await graph.compute({"a": x}))["y"]
    expected = x.astype(np.float64) @ w.dequantized(True).T
    assert_close(got, expected, rtol=1e-5, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("accuracy_level", [0, 4])
async def test_matmul_nbits_float16(accuracy_level: int) -> None:
    rng = np.random.default_rng(26)
    n, k, block = 8, 64, 32
    w = QuantizedMatrix(rng, n, k, 4, block, "float16")
    x = random(rng, (3, k), "float16", -1, 1)
    b = builder()
    a = declare(b, "a", x)
    y = b.matmul_nbits(
        a,
        b.constant(w.b),
        b.constant(w.scales),
        b.constant(w.zero_points),
        k=k,
        n=n,
        bits=4,
        block_size=block,
        accuracy_level=accuracy_level,
    )
    got = (await (await b.build({"y": y})).compute({"a": x}))["y"]
    wd = w.dequantized(True)
    expected = x.astype(np.float64) @ wd.T
    # float16 output rounding (2**-11 relative) on top of the float32 (or int8) product.
    bound = 1e-3 * np.abs(expected) + 1e-3
    if accuracy_level == 4:
        bound = bound + int8_activation_bound(x.astype(np.float64), wd)
    assert got.dtype == np.float16
    assert np.all(np.abs(got - expected) <= bound)


async def test_tolerance_catches_a_small_error() -> None:
    """The float32 tolerance is tight enough to notice a 0.05 % error."""
    x = np.full((2, 2), 1.0, np.float32)
    got = await run_op(lambda g, a: g.matmul(a, a), x)
    assert_close(got, np.full((2, 2), 2.0), **TOLERANCE["float32"])
    with pytest.raises(AssertionError):
        assert_close(got, np.full((2, 2), 2.001), **TOLERANCE["float32"])
