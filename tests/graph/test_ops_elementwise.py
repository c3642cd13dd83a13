"""Elementwise ops against numpy: binary math with broadcasting, comparisons, unary math,
activations, clamp, cast and where, over every data type each op accepts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from pullweights import GraphBuilder, Operand
from tests.graph.common import (
    FLOAT_TYPES,
    INT_TYPES,
    TOLERANCE,
    Tolerance,
    assert_close,
    erf,
    random,
    run_op,
)

ALL_NUMBERS = (*FLOAT_TYPES, *INT_TYPES)
Ref = Callable[..., np.ndarray]


def _trunc_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer division rounding toward zero (ONNX / C), not numpy's floor."""
    q = np.abs(a.astype(np.int64)) // np.abs(b.astype(np.int64))
    return np.asarray(np.sign(a.astype(np.int64)) * np.sign(b.astype(np.int64)) * q, a.dtype)


def _operands(rng: np.random.Generator, op: str, dtype: str, shapes: tuple[Any, Any]) -> Any:
    """Inputs that keep every op in range: no overflow, no division by ~0, positive bases."""
    sa, sb = shapes
    if op == "pow":
        return random(rng, sa, dtype, 0.5, 3), random(rng, sb, dtype, -2, 2)
    if dtype.startswith("float"):
        a = random(rng, sa, dtype)
        if op == "div":
            b = random(rng, sb, dtype, 0.5, 3) * np.where(rng.random(sb) < 0.5, -1, 1).astype(dtype)
            return a, b
        return a, random(rng, sb, dtype)
    signed = np.iinfo(dtype).min < 0
    if op == "sub" and not signed:
        return random(rng, sa, dtype, 5, 9), random(rng, sb, dtype, 0, 4)
    if op == "div":
        b = random(rng, sb, dtype, 1, 4)
        if signed:
            b = (b * np.where(rng.random(sb) < 0.5, -1, 1)).astype(dtype)
        return random(rng, sa, dtype, -20 if signed else 0, 20), b
    return random(rng, sa, dtype, -5 if signed else 0, 9), random(
        rng, sb, dtype, -5 if signed else 0, 9
    )


BINARY: dict[str, Ref] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "max": np.maximum,
    "min": np.minimum,
}


@pytest.mark.parametrize("dtype", ALL_NUMBERS)
@pytest.mark.parametrize("op", [*BINARY, "div"])
async def test_binary_arithmetic(op: str, dtype: str) -> None:
    rng = np.random.default_rng(1)
    a, b = _operands(rng, op, dtype, ((2, 3, 4), (3, 1)))
    got = await run_op(lambda g, x, y: getattr(g, op)(x, y), a, b)
    if dtype.startswith("float"):
        expected = (np.divide if op == "div" else BINARY[op])(
            a.astype(np.float64), b.astype(np.float64)
        )
        assert_close(got, expected, dtype=dtype, **TOLERANCE[dtype])
    else:
        expected = _trunc_div(*np.broadcast_arrays(a, b)) if op == "div" else BINARY[op](a, b)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", FLOAT_TYPES)
async def test_pow(dtype: str) -> None:
    rng = np.random.default_rng(2)
    a, b = _operands(rng, "pow", dtype, ((3, 4), (4,)))
    got = await run_op(lambda g, x, y: g.pow(x, y), a, b)
    expected = np.power(a.astype(np.float64), b.astype(np.float64))
    assert_close(got, expected, dtype=dtype, **TOLERANCE[dtype])


@pytest.mark.parametrize(
    ("shape_a", "shape_b", "shape_out"),
    [
        ((2, 3, 4), (3, 1), (2, 3, 4)),
        ((4,), (2, 3, 4), (2, 3, 4)),
        ((1, 3, 1), (2, 1, 4), (2, 3, 4)),
        ((), (2, 3), (2, 3)),
        ((5, 1), (1, 0), (5, 0)),
    ],
)
async def test_broadcasting(
    shape_a: tuple[int, ...], shape_b: tuple[int, ...], shape_out: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(3)
    a, b = random(rng, shape_a, "float32"), random(rng, shape_b, "float32")
    got = await run_op(lambda g, x, y: g.mul(g.add(x, y), y), a, b)
    assert got.shape == shape_out
    assert_close(got, (a + b) * b, **TOLERANCE["float32"])


COMPARISONS: dict[str, Ref] = {
    "equal": np.equal,
    "greater": np.greater,
    "greater_or_equal": np.greater_equal,
    "lesser": np.less,
    "lesser_or_equal": np.less_equal,
}


@pytest.mark.parametrize("dtype", ALL_NUMBERS)
@pytest.mark.parametrize("op", COMPARISONS)
async def test_comparison(op: str, dtype: str) -> None:
    rng = np.random.default_rng(4)
    # Few distinct values, so ties occur and == / >= / <= are really exercised.
    a = rng.integers(0, 3, (3, 4)).astype(dtype)
    b = rng.integers(0, 3, (4,)).astype(dtype)
    got = await run_op(lambda g, x, y: getattr(g, op)(x, y), a, b)
    assert got.dtype == np.bool_
    np.testing.assert_array_equal(got, COMPARISONS[op](a, b))


async def test_equal_bool() -> None:
    rng = np.random.default_rng(5)
    a, b = random(rng, (3, 4), "bool"), random(rng, (3, 4), "bool")
    got = await run_op(lambda g, x, y: g.equal(x, y), a, b)
    np.testing.assert_array_equal(got, a == b)


@pytest.mark.parametrize(
    ("op", "ref"),
    [("logical_and", np.logical_and), ("logical_or", np.logical_or)],
)
async def test_logical_binary(op: str, ref: Ref) -> None:
    rng = np.random.default_rng(6)
    a, b = random(rng, (2, 3, 4), "bool"), random(rng, (3, 1), "bool")
    got = await run_op(lambda g, x, y: getattr(g, op)(x, y), a, b)
    np.testing.assert_array_equal(got, ref(a, b))


async def test_logical_not() -> None:
    a = random(np.random.default_rng(7), (3, 5), "bool")
    got = await run_op(lambda g, x: g.logical_not(x), a)
    np.testing.assert_array_equal(got, ~a)


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))))


# name -> (builder call, float64 reference, input range)
UNARY: dict[str, tuple[Callable[[GraphBuilder, Operand], Operand], Ref, tuple[float, float]]] = {
    "abs": (lambda g, x: g.abs(x), np.abs, (-3, 3)),
    "neg": (lambda g, x: g.neg(x), np.negative, (-3, 3)),
    "exp": (lambda g, x: g.exp(x), np.exp, (-3, 3)),
    "log": (lambda g, x: g.log(x), np.log, (0.1, 5)),
    "sqrt": (lambda g, x: g.sqrt(x), np.sqrt, (0, 5)),
    "reciprocal": (lambda g, x: g.reciprocal(x), np.reciprocal, (0.5, 3)),
    "sin": (lambda g, x: g.sin(x), np.sin, (-4, 4)),
    "cos": (lambda g, x: g.cos(x), np.cos, (-4, 4)),
    "floor": (lambda g, x: g.floor(x), np.floor, (-3, 3)),
    "ceil": (lambda g, x: g.ceil(x), np.ceil, (-3, 3)),
    "erf": (lambda g, x: g.erf(x), erf, (-3, 3)),
    "tanh": (lambda g, x: g.tanh(x), np.tanh, (-3, 3)),
    "sigmoid": (lambda g, x: g.sigmoid(x), lambda x: 1 / (1 + np.exp(-x)), (-6, 6)),
    "relu": (lambda g, x: g.relu(x), lambda x: np.maximum(x, 0), (-3, 3)),
    "softplus": (lambda g, x: g.softplus(x), lambda x: np.log1p(np.exp(x)), (-6, 6)),
    "leaky_relu": (
        lambda g, x: g.leaky_relu(x, alpha=0.1),
        lambda x: np.where(x > 0, x, 0.1 * x),
        (-3, 3),
    ),
    "gelu": (lambda g, x: g.gelu(x), lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2))), (-4, 4)),
    "gelu_tanh": (lambda g, x: g.gelu(x, approximate="tanh"), _gelu_tanh, (-4, 4)),
    "silu": (lambda g, x: g.silu(x), lambda x: x / (1 + np.exp(-x)), (-6, 6)),
}


@pytest.mark.parametrize("dtype", FLOAT_TYPES)
@pytest.mark.parametrize("name", UNARY)
async def test_unary_float(name: str, dtype: str) -> None:
    make, ref, (low, high) = UNARY[name]
    x = random(np.random.default_rng(8), (4, 33), dtype, low, high)
    got = await run_op(make, x)
    tol: Tolerance = TOLERANCE[dtype]
    if name in ("erf", "gelu") and dtype == "float32":
        # The reference erf itself is only good to 1.5e-7 absolute.
        tol = {"rtol": 1e-5, "atol": 2e-6}
    assert_close(got, ref(x.astype(np.float64)), dtype=dtype, **tol)


@pytest.mark.parametrize("dtype", ["int64", "int32", "int8"])
@pytest.mark.parametrize("op", ["abs", "neg"])
async def test_unary_signed_int(op: str, dtype: str) -> None:
    x = random(np.random.default_rng(9), (3, 7), dtype, -100, 100)
    got = await run_op(lambda g, a: getattr(g, op)(a), x)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, np.abs(x) if op == "abs" else -x)


@pytest.mark.parametrize("dtype", ["uint32", "uint8"])
async def test_abs_unsigned(dtype: str) -> None:
    x = random(np.random.default_rng(10), (3, 7), dtype, 0, 200)
    got = await run_op(lambda g, a: g.abs(a), x)
    np.testing.assert_array_equal(got, x)


@pytest.mark.parametrize("dtype", ALL_NUMBERS)
@pytest.mark.parametrize(("low", "high"), [(-1.0, 2.0), (None, 2.0), (0.0, None)])
async def test_clamp(dtype: str, low: float | None, high: float | None) -> None:
    signed = dtype.startswith("float") or np.iinfo(dtype).min < 0
    lo = low if (low is None or signed) else 1.0
    x = random(np.random.default_rng(11), (4, 9), dtype, -4 if signed else 0, 4)
    got = await run_op(lambda g, a: g.clamp(a, lo, high), x)
    expected = np.clip(x, lo, high)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, expected.astype(dtype))


CASTS = [
    ("float32", "int32", lambda x: np.trunc(x).astype(np.int32)),  # toward zero
    ("float32", "int64", lambda x: np.trunc(x).astype(np.int64)),
    ("float32", "float16", lambda x: x.astype(np.float16)),
    ("float16", "float32", lambda x: x.astype(np.float32)),
    ("int32", "float32", lambda x: x.astype(np.float32)),
    ("int64", "int8", lambda x: x.astype(np.int8)),
    ("uint8", "int32", lambda x: x.astype(np.int32)),
    ("float32", "bool", lambda x: x != 0),
    ("bool", "float32", lambda x: x.astype(np.float32)),
    ("int32", "uint32", lambda x: x.astype(np.uint32)),
]


@pytest.mark.parametrize(("src", "dst", "ref"), CASTS)
async def test_cast(src: str, dst: str, ref: Ref) -> None:
    rng = np.random.default_rng(12)
    if src == "float32":
        x = np.round(random(rng, (5, 6), src, -50, 50), 1)
        x[0, :3] = 0  # exact zeros for the bool cast
    else:
        x = random(rng, (5, 6), src, 0 if dst.startswith("u") else -100, 100)
    got = await run_op(lambda g, a: g.cast(a, dst), x)
    assert got.dtype == dst
    np.testing.assert_array_equal(got, ref(x))


@pytest.mark.parametrize("dtype", ["float32", "float16", "int64", "int32", "uint8"])
async def test_where(dtype: str) -> None:
    rng = np.random.default_rng(13)
    cond = random(rng, (2, 1, 4), "bool")
    a, b = random(rng, (3, 1), dtype, 0, 9), random(rng, (), dtype, 0, 9)
    got = await run_op(lambda g, c, x, y: g.where(c, x, y), cond, a, b)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, np.where(cond, a, b))
