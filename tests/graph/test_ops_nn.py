"""conv2d, pooling, layer and RMS normalization against numpy references (NCHW)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from pullweights import GraphBuilder, Operand
from tests.graph.common import TOLERANCE, Tolerance, assert_close, random, run_op

# A conv output sums up to C/groups * KH * KW (<= 72 here) float32 products of magnitude
# <= 9; onnxruntime may reorder the sum (im2col + GEMM), so allow ~100 ulps of 1e-7 * 9.
CONV_TOL: Tolerance = {"rtol": 1e-5, "atol": 1e-4}


def _windows(
    x: np.ndarray,
    kernel: tuple[int, int],
    strides: tuple[int, int],
    dilations: tuple[int, int],
) -> np.ndarray:
    """``[N, C, OH, OW, KH, KW]`` views of every (strided, dilated) window of padded ``x``."""
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    win = sliding_window_view(x, extent, axis=(2, 3))
    return win[:, :, :: strides[0], :: strides[1], :: dilations[0], :: dilations[1]]


def conv2d_reference(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None,
    padding: tuple[int, int, int, int],
    strides: tuple[int, int],
    dilations: tuple[int, int],
    groups: int,
) -> np.ndarray:
    top, bottom, left, right = padding
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    o, cg, kh, kw = w.shape
    win = _windows(xp, (kh, kw), strides, dilations)
    n, _, oh, ow = win.shape[:4]
    win = win.reshape(n, groups, cg, oh, ow, kh, kw)
    wg = w.astype(np.float64).reshape(groups, o // groups, cg, kh, kw)
    out = np.einsum("ngchwij,gocij->ngohw", win, wg).reshape(n, o, oh, ow)
    return np.asarray(out if bias is None else out + bias.reshape(1, o, 1, 1))


CONV_CASES = [
    # (input shape, filter shape, padding, strides, dilations, groups)
    ((1, 3, 7, 8), (4, 3, 3, 3), None, None, None, 1),
    ((2, 4, 9, 9), (6, 2, 3, 2), (1, 1, 0, 2), (2, 1), (1, 2), 2),
    ((1, 4, 8, 8), (4, 1, 3, 3), (1, 1, 1, 1), None, None, 4),  # depthwise
    ((1, 4, 8, 8), (8, 1, 3, 3), (2, 0, 1, 1), (2, 2), None, 4),  # depthwise, multiplier 2
    ((1, 2, 10, 6), (3, 2, 2, 2), (0, 0, 0, 0), (3, 2), (3, 2), 1),
    ((1, 2, 3, 3), (2, 2, 3, 3), (1, 2, 2, 1), None, None, 1),
    ((1, 1, 5, 5), (1, 1, 5, 5), None, None, None, 1),  # window == input
    ((1, 3, 6, 6), (3, 3, 1, 1), None, (3, 3), None, 1),  # 1x1, strided
]


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize(
    ("x_shape", "w_shape", "padding", "strides", "dilations", "groups"), CONV_CASES
)
async def test_conv2d(
    x_shape: tuple[int, int, int, int],
    w_shape: tuple[int, int, int, int],
    padding: tuple[int, int, int, int] | None,
    strides: tuple[int, int] | None,
    dilations: tuple[int, int] | None,
    groups: int,
    with_bias: bool,
) -> None:
    rng = np.random.default_rng(50)
    x, w = random(rng, x_shape, "float32"), random(rng, w_shape, "float32")
    arrays = [x, w] + ([random(rng, (w_shape[0],), "float32")] if with_bias else [])

    def make(g: GraphBuilder, a: Operand, f: Operand, bias: Operand | None = None) -> Operand:
        return g.conv2d(
            a, f, bias, padding=padding, strides=strides, dilations=dilations, groups=groups
        )

    got = await run_op(make, *arrays)
    expected = conv2d_reference(
        x,
        w,
        arrays[2] if with_bias else None,
        padding or (0, 0, 0, 0),
        strides or (1, 1),
        dilations or (1, 1),
        groups,
    )
    assert_close(got, expected, **CONV_TOL)


async def test_conv2d_float16() -> None:
    rng = np.random.default_rng(51)
    x, w = random(rng, (1, 2, 5, 5), "float16", -1, 1), random(rng, (3, 2, 3, 3), "float16", -1, 1)
    got = await run_op(lambda g, a, f: g.conv2d(a, f, padding=[1, 1, 1, 1]), x, w)
    expected = conv2d_reference(x, w, None, (1, 1, 1, 1), (1, 1), (1, 1), 1)
    # 18-term sums of products <= 1, rounded once to float16 (2**-11 relative of <= 18).
    assert_close(got, expected, dtype="float16", rtol=2e-3, atol=1e-2)


def pool_reference(
    x: np.ndarray,
    window: tuple[int, int],
    padding: tuple[int, int, int, int],
    strides: tuple[int, int],
    dilations: tuple[int, int],
    kind: str,
) -> np.ndarray:
    """Max pooling pads with -inf; average pooling averages only the real elements."""
    top, bottom, left, right = padding
    pads = ((0, 0), (0, 0), (top, bottom), (left, right))
    x64 = x.astype(np.float64)
    if kind == "max":
        xp = np.pad(x64, pads, constant_values=-np.inf)
        return _windows(xp, window, strides, dilations).max(axis=(-2, -1))
    total = _windows(np.pad(x64, pads), window, strides, dilations).sum(axis=(-2, -1))
    count = _windows(np.pad(np.ones_like(x64), pads), window, strides, dilations)
    return np.asarray(total / count.sum(axis=(-2, -1)))


POOL_CASES = [
    # (window, padding, strides, dilations)
    ((2, 2), None, (2, 2), None),
    ((3, 3), (1, 1, 1, 1), None, None),
    ((3, 2), (2, 0, 1, 1), (2, 3), None),
    ((2, 2), (1, 0, 0, 1), (1, 1), (2, 2)),
    ((5, 6), None, None, None),  # global
]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize(
    ("kind", "window", "padding", "strides", "dilations"),
    [("max", *case) for case in POOL_CASES]
    + [("average", *case) for case in POOL_CASES if case[3] is None],  # no dilated average
)
async def test_pool2d(
    kind: str,
    window: tuple[int, int],
    padding: tuple[int, int, int, int] | None,
    strides: tuple[int, int] | None,
    dilations: tuple[int, int] | None,
    dtype: str,
) -> None:
    x = random(np.random.default_rng(52), (2, 3, 5, 6), dtype)

    def make(g: GraphBuilder, a: Operand) -> Operand:
        if kind == "max":
            return g.max_pool2d(a, window, padding=padding, strides=strides, dilations=dilations)
        return g.average_pool2d(a, window, padding=padding, strides=strides)

    got = await run_op(make, x)
    expected = pool_reference(
        x, window, padding or (0, 0, 0, 0), strides or (1, 1), dilations or (1, 1), kind
    )
    assert_close(got, expected, dtype=dtype, **TOLERANCE[dtype])


def layer_norm_reference(
    x: np.ndarray, scale: np.ndarray | None, bias: np.ndarray | None, axis: int, eps: float
) -> np.ndarray:
    x64 = x.astype(np.float64)
    axes = tuple(range(axis % x.ndim, x.ndim))
    mean = x64.mean(axis=axes, keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=axes, keepdims=True)
    out = (x64 - mean) / np.sqrt(var + eps)
    if scale is not None:
        out = out * scale
    return out if bias is None else out + bias


def rms_norm_reference(x: np.ndarray, scale: np.ndarray, axis: int, eps: float) -> np.ndarray:
    x64 = x.astype(np.float64)
    axes = tuple(range(axis % x.ndim, x.ndim))
    return np.asarray(x64 / np.sqrt((x64 * x64).mean(axis=axes, keepdims=True) + eps) * scale)


# Normalization: means of 8..32 float32 values and one rsqrt; 1e-5 relative is ~100 ulps.
NORM_TOL: dict[str, Tolerance] = {
    "float32": {"rtol": 1e-5, "atol": 1e-5},
    "float16": TOLERANCE["float16"],
}


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("parts", ["none", "scale", "scale+bias"])
@pytest.mark.parametrize("axis", [-1, -2, 1])
async def test_layer_normalization(axis: int, parts: str, dtype: str) -> None:
    rng = np.random.default_rng(53)
    x = random(rng, (2, 4, 8), dtype)
    norm_shape = x.shape[axis % 3 :]
    arrays = [x]
    if parts != "none":
        arrays.append(random(rng, norm_shape, dtype, 0.5, 2))
    if parts == "scale+bias":
        arrays.append(random(rng, norm_shape, dtype))

    def make(
        g: GraphBuilder, a: Operand, s: Operand | None = None, b: Operand | None = None
    ) -> Operand:
        return g.layer_normalization(a, s, b, axis=axis, epsilon=1e-3)

    got = await run_op(make, *arrays)
    scale = arrays[1] if len(arrays) > 1 else None
    bias = arrays[2] if len(arrays) > 2 else None
    expected = layer_norm_reference(x, scale, bias, axis, 1e-3)
    assert_close(got, expected, dtype=dtype, **NORM_TOL[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("axis", [-1, -2])
async def test_rms_normalization(axis: int, dtype: str) -> None:
    rng = np.random.default_rng(54)
    x = random(rng, (3, 4, 8), dtype)
    scale = random(rng, x.shape[axis % 3 :], dtype, 0.5, 2)
    got = await run_op(lambda g, a, s: g.rms_normalization(a, s, axis=axis, epsilon=1e-4), x, scale)
    expected = rms_norm_reference(x, scale, axis, 1e-4)
    assert_close(got, expected, dtype=dtype, **NORM_TOL[dtype])
