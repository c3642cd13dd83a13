"""Shape ops against numpy: reshape, transpose, concat, split, slice, gather, expand.

They move elements without arithmetic, so results must be bit-exact, for every dtype."""

from __future__ import annotations

import numpy as np
import pytest

from pullweights import GraphBuilder, Operand
from tests.graph.common import random, run_op, run_ops

DTYPES = ["float32", "float16", "int64", "int32", "uint32", "int8", "uint8", "bool"]


def _data(shape: tuple[int, ...], dtype: str = "float32") -> np.ndarray:
    return random(np.random.default_rng(30), shape, dtype, -50, 50)


@pytest.mark.parametrize("dtype", DTYPES)
async def test_reshape_every_dtype(dtype: str) -> None:
    x = _data((2, 3, 4), dtype)
    got = await run_op(lambda g, a: g.reshape(a, [4, 6]), x)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, x.reshape(4, 6))


@pytest.mark.parametrize("new_shape", [[24], [1, 24, 1], [2, 12], [4, 3, 2], [2, 0, 5]])
async def test_reshape(new_shape: list[int]) -> None:
    x = _data((2, 0, 5) if 0 in new_shape else (2, 3, 4))
    got = await run_op(lambda g, a: g.reshape(a, new_shape), x)
    np.testing.assert_array_equal(got, x.reshape(new_shape))


@pytest.mark.parametrize("perm", [None, [0, 1, 2], [2, 0, 1], [1, 0, 2]])
@pytest.mark.parametrize("dtype", ["float32", "bool", "int8"])
async def test_transpose(perm: list[int] | None, dtype: str) -> None:
    x = _data((2, 3, 4), dtype)
    got = await run_op(lambda g, a: g.transpose(a, perm), x)
    np.testing.assert_array_equal(got, np.transpose(x, perm))


@pytest.mark.parametrize("axis", [0, 1, -1, -3])
async def test_concat(axis: int) -> None:
    arrays = []
    for size in (1, 2, 3):  # a different length along the concatenated axis
        shape = [2, 3, 4]
        shape[axis % 3] = size
        arrays.append(_data(tuple(shape)) + size)
    got = await run_op(lambda g, *xs: g.concat(list(xs), axis), *arrays)
    np.testing.assert_array_equal(got, np.concatenate(arrays, axis))


async def test_concat_one_input_and_empty_part() -> None:
    a, empty = _data((2, 3), "int32"), np.zeros((0, 3), np.int32)
    got = await run_op(lambda g, x, y: g.concat([x, y, x], 0), a, empty)
    np.testing.assert_array_equal(got, np.concatenate([a, empty, a]))
    got = await run_op(lambda g, x: g.concat([x], 1), a)
    np.testing.assert_array_equal(got, a)


@pytest.mark.parametrize(
    ("splits", "axis"), [(3, 1), ([1, 4, 1], 1), (2, -1), ([0, 2, 0], 0), ([4], 2)]
)
async def test_split(splits: int | list[int], axis: int) -> None:
    x = _data((2, 6, 4), "int64")
    outs = await run_ops(lambda g, a: g.split(a, splits, axis), x)
    sizes = [x.shape[axis] // splits] * splits if isinstance(splits, int) else splits
    expected = np.split(x, np.cumsum(sizes)[:-1], axis=axis)
    assert len(outs) == len(expected)
    for got, want in zip(outs, expected, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    ("starts", "sizes", "strides"),
    [
        ([0, 0, 0], [2, 6, 5], None),  # whole tensor: returned as is
        ([1, 2, 1], [1, 3, 4], None),
        ([0, 1, 0], [2, 5, 5], [1, 2, 3]),
        ([0, 0, 4], [2, 6, 1], [2, 5, 1]),
        ([1, 6, 0], [1, 0, 5], None),  # empty along one axis
        ([0, 0, 0], [2, 6, 5], [2, 4, 2]),
    ],
)
async def test_slice(starts: list[int], sizes: list[int], strides: list[int] | None) -> None:
    x = _data((2, 6, 5))
    got = await run_op(lambda g, a: g.slice(a, starts, sizes, strides), x)
    steps = strides or [1, 1, 1]
    index = tuple(slice(s, s + n, st) for s, n, st in zip(starts, sizes, steps, strict=True))
    np.testing.assert_array_equal(got, x[index])


@pytest.mark.parametrize("index_dtype", ["int64", "int32", "uint32"])
@pytest.mark.parametrize(
    ("index_shape", "axis"), [((4,), 0), ((2, 3), 0), ((2, 3), 1), ((), 1), ((5,), -1)]
)
async def test_gather(index_dtype: str, index_shape: tuple[int, ...], axis: int) -> None:
    x = _data((3, 4, 5))
    n = x.shape[axis]
    rng = np.random.default_rng(31)
    low = 0 if index_dtype == "uint32" else -n  # negative indices count from the end
    indices = rng.integers(low, n, index_shape).astype(index_dtype)
    got = await run_op(lambda g, a, i: g.gather(a, i, axis), x, indices)
    np.testing.assert_array_equal(got, np.take(x, indices.astype(np.int64), axis=axis))


async def test_gather_from_constant_table() -> None:
    table = _data((10, 4), "float16")
    ids = np.array([[9, 0], [3, 3]], np.int32)

    def make(g: GraphBuilder, i: Operand) -> Operand:
        return g.gather(g.constant(table), i)

    got = await run_op(make, ids)
    np.testing.assert_array_equal(got, table[ids])


@pytest.mark.parametrize(
    ("shape", "new_shape"),
    [((3, 1), (2, 3, 4)), ((1,), (5,)), ((), (2, 2)), ((2, 1, 3), (2, 4, 3)), ((3, 1), (3, 0))],
)
@pytest.mark.parametrize("dtype", ["float32", "bool", "uint8"])
async def test_expand(shape: tuple[int, ...], new_shape: tuple[int, ...], dtype: str) -> None:
    x = _data(shape, dtype)
    got = await run_op(lambda g, a: g.expand(a, list(new_shape)), x)
    np.testing.assert_array_equal(got, np.broadcast_to(x, new_shape))
