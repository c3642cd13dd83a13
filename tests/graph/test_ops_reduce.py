"""Reductions, argmax/argmin and softmax against numpy."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from tests.graph.common import TOLERANCE, assert_close, random, run_op

AXES = [None, [1], [-1], [0, 2], [], [-3, -2, -1]]


def _mean(x: np.ndarray, axis: tuple[int, ...] | None, keepdims: bool) -> np.ndarray:
    mean = x.mean(axis=axis, keepdims=True)
    return mean if keepdims else np.squeeze(mean, axis=axis)


def _l2(x: np.ndarray, axis: tuple[int, ...] | None, keepdims: bool) -> np.ndarray:
    return np.asarray(np.sqrt((x * x).sum(axis=axis, keepdims=keepdims)))


REDUCERS: dict[str, Callable[..., np.ndarray]] = {
    "reduce_sum": np.sum,
    "reduce_mean": _mean,
    "reduce_max": np.max,
    "reduce_min": np.min,
    "reduce_product": np.prod,
    "reduce_l2": _l2,
}


def _numpy_axes(axes: list[int] | None) -> tuple[int, ...] | None:
    return None if axes is None else tuple(axes)


@pytest.mark.parametrize("keep_dims", [False, True])
@pytest.mark.parametrize("axes", AXES)
@pytest.mark.parametrize("op", REDUCERS)
async def test_reduce_float32(op: str, axes: list[int] | None, keep_dims: bool) -> None:
    # Values in [0.5, 1.5): products of up to 24 of them stay well inside float32 range.
    x = random(np.random.default_rng(40), (2, 3, 4), "float32", 0.5, 1.5)
    got = await run_op(lambda g, a: getattr(g, op)(a, axes, keep_dims), x)
    if axes == []:
        expected = x.astype(np.float64)  # no axes: nothing is reduced
    else:
        expected = REDUCERS[op](x.astype(np.float64), axis=_numpy_axes(axes), keepdims=keep_dims)
    assert_close(got, expected, **TOLERANCE["float32"])


@pytest.mark.parametrize("op", REDUCERS)
async def test_reduce_float16(op: str) -> None:
    x = random(np.random.default_rng(41), (3, 8), "float16", 0.5, 1.5)
    got = await run_op(lambda g, a: getattr(g, op)(a, [1], False), x)
    expected = REDUCERS[op](x.astype(np.float64), axis=(1,), keepdims=False)
    assert_close(got, expected, dtype="float16", **TOLERANCE["float16"])


@pytest.mark.parametrize("dtype", ["int64", "int32"])
@pytest.mark.parametrize("op", ["reduce_sum", "reduce_max", "reduce_min", "reduce_product"])
async def test_reduce_int(op: str, dtype: str) -> None:
    x = random(np.random.default_rng(42), (3, 4), dtype, -3, 3)
    got = await run_op(lambda g, a: getattr(g, op)(a, [-1], True), x)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, REDUCERS[op](x, axis=-1, keepdims=True))


@pytest.mark.parametrize("dtype", ["int64", "int32"])
async def test_reduce_mean_int_truncates(dtype: str) -> None:
    x = np.array([[-7, 3, 2], [5, 1, 1], [-1, 0, 0]], dtype)
    got = await run_op(lambda g, a: g.reduce_mean(a, [1]), x)
    np.testing.assert_array_equal(got, np.trunc(x.sum(1) / 3).astype(dtype))


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("op", ["reduce_max", "reduce_min"])
async def test_reduce_max_min_8bit(op: str, dtype: str) -> None:
    x = random(np.random.default_rng(43), (3, 5), dtype, -100, 100)
    got = await run_op(lambda g, a: getattr(g, op)(a, [0]), x)
    np.testing.assert_array_equal(got, REDUCERS[op](x, axis=0))


@pytest.mark.parametrize("keep_dims", [False, True])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("op", ["argmax", "argmin"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "int32", "int64", "int8", "uint8"])
async def test_arg(op: str, axis: int, keep_dims: bool, dtype: str) -> None:
    # Few distinct values: ties must resolve to the first index, as numpy does.
    x = np.random.default_rng(44).integers(0, 4, (3, 4, 5)).astype(dtype)
    got = await run_op(lambda g, a: getattr(g, op)(a, axis, keep_dims), x)
    expected = getattr(np, op)(x, axis=axis, keepdims=keep_dims)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return np.asarray(e / e.sum(axis=axis, keepdims=True))


@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
async def test_softmax(axis: int, dtype: str) -> None:
    x = random(np.random.default_rng(45), (3, 4, 7), dtype, -8, 8)
    got = await run_op(lambda g, a: g.softmax(a, axis), x)
    assert_close(got, _softmax(x.astype(np.float64), axis), dtype=dtype, **TOLERANCE[dtype])


async def test_softmax_large_values_are_stable() -> None:
    x = np.array([[1000.0, 1001.0, 1002.0], [-1000.0, -1000.0, -1000.0]], np.float32)
    got = await run_op(lambda g, a: g.softmax(a), x)
    assert_close(got, _softmax(x.astype(np.float64), -1), **TOLERANCE["float32"])
