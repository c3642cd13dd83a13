"""Shared helpers: declare inputs from arrays, build, compute, compare with a reference."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypedDict

import numpy as np

from pullweights import GraphBuilder, Operand, TensorDescriptor, create_context
from pullweights.dtypes import from_numpy

#: One intra-op thread: tests run beside other work on a small machine.
CONTEXT = create_context("low-power", cache_dir=None)

FLOAT_TYPES = ("float32", "float16")
INT_TYPES = ("int64", "int32", "uint32", "int8", "uint8")


class Tolerance(TypedDict):
    """Keyword arguments of :func:`assert_close` / ``np.testing.assert_allclose``."""

    rtol: float
    atol: float


#: Elementwise tolerance against a float64 reference. float32: a few ulps (vectorised
#: exp/tanh kernels are not correctly rounded). float16: one rounding of the result is
#: 2**-11 relative; onnxruntime computes in float32 and rounds once.
TOLERANCE: dict[str, Tolerance] = {
    "float32": {"rtol": 1e-5, "atol": 1e-6},
    "float16": {"rtol": 2e-3, "atol": 2e-3},
}


def builder() -> GraphBuilder:
    """A fresh builder on the shared test context."""
    return GraphBuilder(CONTEXT)


def declare(b: GraphBuilder, name: str, array: np.ndarray) -> Operand:
    """An input of ``array``'s dtype and static shape."""
    return b.input(name, TensorDescriptor(from_numpy(array.dtype), array.shape))


async def run_op(
    make: Callable[..., Operand | Sequence[Operand]], *arrays: np.ndarray
) -> np.ndarray:
    """Declare ``arrays`` as inputs ``x0, x1, ...``, apply ``make(builder, *inputs)``,
    build and compute. Returns the one output."""
    results = await run_ops(make, *arrays)
    assert len(results) == 1
    return results[0]


async def run_ops(
    make: Callable[..., Operand | Sequence[Operand]], *arrays: np.ndarray
) -> list[np.ndarray]:
    """Like :func:`run_op` but always returns the list of outputs."""
    b = builder()
    inputs = [declare(b, f"x{i}", a) for i, a in enumerate(arrays)]
    made = make(b, *inputs)
    outs = [made] if isinstance(made, Operand) else list(made)
    graph = await b.build({f"out{i}": o for i, o in enumerate(outs)})
    result = await graph.compute({f"x{i}": a for i, a in enumerate(arrays)})
    return [result[f"out{i}"] for i in range(len(outs))]


def random(
    rng: np.random.Generator, shape: Sequence[int], dtype: str, low: float = -3, high: float = 3
) -> np.ndarray:
    """Uniform values in ``[low, high)`` (integers for integer types, coin flips for bool)."""
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype.startswith("float"):
        return rng.uniform(low, high, shape).astype(dtype)
    info = np.iinfo(dtype)
    lo, hi = max(int(low), info.min), min(int(high), info.max)
    return rng.integers(lo, hi, shape, endpoint=True).astype(dtype)


def assert_close(
    actual: np.ndarray,
    expected: np.ndarray,
    *,
    rtol: float,
    atol: float,
    dtype: str = "float32",
) -> None:
    """``actual`` has ``dtype``, ``expected``'s shape, and values within tolerance of it
    (``expected`` is usually a float64 reference)."""
    assert actual.dtype == np.dtype(dtype), f"dtype {actual.dtype} != {dtype}"
    assert actual.shape == np.shape(expected), f"shape {actual.shape} != {np.shape(expected)}"
    np.testing.assert_allclose(
        actual.astype(np.float64), np.asarray(expected, np.float64), rtol=rtol, atol=atol
    )


def erf(x: np.ndarray) -> np.ndarray:
    """The error function in float64 (Abramowitz & Stegun 7.1.26, |error| <= 1.5e-7)."""
    x = np.asarray(x, np.float64)
    t = 1.0 / (1.0 + 0.3275911 * np.abs(x))
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    return np.asarray(np.sign(x) * (1.0 - poly * np.exp(-x * x)))


def pack_bits(q: np.ndarray, bits: int) -> np.ndarray:
    """Pack values < 2**bits along the last axis: element j at bit j*bits, LSB first."""
    per = 8 // bits
    groups = q.reshape(*q.shape[:-1], -1, per).astype(np.uint8)
    shifts = (np.arange(per) * bits).astype(np.uint8)
    return np.asarray(np.bitwise_or.reduce(groups << shifts, axis=-1), dtype=np.uint8)
