"""Misuse fails where the mistake is made: GraphError at the op call (naming the op and
operands), ComputeError for bad compute inputs or an onnxruntime failure (naming the builder
call that made the failing node)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from pullweights import (
    ComputeError,
    Dim,
    Graph,
    GraphBuilder,
    GraphError,
    MemorySource,
    Operand,
    TensorDescriptor,
    raw_weight,
)
from pullweights.descriptor import DimLike
from pullweights.graph.ops_nn import MAX_WINDOW_PARAM
from tests.graph.common import builder

BIG = MAX_WINDOW_PARAM + 1


def _inputs(b: GraphBuilder, *specs: tuple[str, str, Sequence[DimLike]]) -> list[Operand]:
    return [b.input(name, TensorDescriptor(dtype, shape)) for name, dtype, shape in specs]


def test_dtype_mismatch_is_not_promoted() -> None:
    b = builder()
    x, y = _inputs(b, ("x", "float32", [2]), ("y", "float16", [2]))
    with pytest.raises(GraphError, match=r"^add: operands must share one dtype \(no implicit"):
        b.add(x, y)
    with pytest.raises(GraphError, match=r"input 'x': float32, input 'y': float16"):
        b.matmul(x, y)


def test_non_broadcastable_shapes() -> None:
    b = builder()
    x, y = _inputs(b, ("x", "float32", [2, 3]), ("y", "float32", [4]))
    with pytest.raises(GraphError, match=r"^mul: shapes \[2, 3\], \[4\] cannot be broadcast"):
        b.mul(x, y)


def test_symbolic_dim_broadcasts_only_with_itself_or_one() -> None:
    b = builder()
    x, y = _inputs(b, ("x", "float32", [Dim("s", 1, 8), 3]), ("y", "float32", [4, 3]))
    with pytest.raises(GraphError, match=r"^sub: shapes"):
        b.sub(x, y)


def test_matmul_inner_mismatch() -> None:
    b = builder()
    x, y = _inputs(b, ("a", "float32", [2, 3]), ("w", "float32", [4, 5]))
    with pytest.raises(
        GraphError, match=r"^matmul: inner dims of input 'a' \[2, 3\] and input 'w' \[4, 5\]"
    ):
        b.matmul(x, y)


async def test_operand_from_another_builder() -> None:
    b1, b2 = builder(), builder()
    (x,) = _inputs(b1, ("x", "float32", [2]))
    (y,) = _inputs(b2, ("y", "float32", [2]))
    with pytest.raises(GraphError, match=r"^add: operand input 'x' belongs to another builder"):
        b2.add(x, y)
    with pytest.raises(GraphError, match=r"^concat: operand input 'x' belongs to another"):
        b2.concat([y, x], 0)
    with pytest.raises(GraphError, match=r"^build: output 'o' is not an operand of this builder"):
        await b2.build({"o": x})


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda b, x: b.softmax(x, axis=2), r"^softmax: axis 2 is out of range for rank 2"),
        (lambda b, x: b.concat([x, x], axis=-3), r"^concat: axis -3 is out of range"),
        (lambda b, x: b.argmax(x, axis=5), r"^argmax: axis 5 is out of range"),
        (lambda b, x: b.reduce_sum(x, [0, -2]), r"^reduce_sum: duplicate axes \[0, -2\]"),
        (lambda b, x: b.reduce_mean(x, [2]), r"^reduce_mean: axis 2 is out of range"),
        (lambda b, x: b.gather(x, b.constant(np.array([0])), axis=2), r"^gather: axis 2"),
        (lambda b, x: b.split(x, 3, axis=1), r"^split: 4 cannot be split into 3 equal parts"),
        (lambda b, x: b.split(x, [1, 2], axis=1), r"^split: sizes \[1, 2\] must .* add up to 4"),
        (lambda b, x: b.transpose(x, [0, 0]), r"^transpose: \[0, 0\] is not a permutation"),
        (lambda b, x: b.transpose(x, [1, 0, 2]), r"^transpose: \[1, 0, 2\] is not a permutation"),
        (lambda b, x: b.slice(x, [0, 3], [1, 2]), r"^slice: axis 1: \[3, 5\) exceeds dim 4"),
        (lambda b, x: b.slice(x, [0, 0], [1, 1], [1, 0]), r"^slice: axis 1: need .*stride >= 1"),
        (lambda b, x: b.reshape(x, [3, 3]), r"^reshape: cannot reshape input 'x' \[3, 4\] \(12 "),
        (lambda b, x: b.expand(x, [2, 4]), r"^expand: shapes \[3, 4\], \[2, 4\] cannot be"),
        (lambda b, x: b.cast(x, "float64"), r"^cast: unknown data type 'float64'"),
        (lambda b, x: b.gelu(x, approximate="erf"), r"^gelu: approximate must be"),
        (lambda b, x: b.clamp(x, 2.0, 1.0), r"^clamp: min_value 2.0 > max_value 1.0"),
        (lambda b, x: b.pow(x, b.cast(x, "int32")), r"^pow: operands must share one dtype"),
        (lambda b, x: b.logical_not(x), r"^logical_not: input input 'x' has dtype float32"),
        (lambda b, x: b.gemm(x, x), r"^gemm: inner dims must match, got 4 and 3"),
        (lambda b, x: b.gemm(x, x, b.constant(np.ones((2, 3), np.float32)), b_transpose=True),
         r"^gemm \(c\): shapes \[2, 3\], \[3, 3\] cannot be broadcast"),
        (lambda b, x: b.gemm(b.slice(x, [0, 0], [1, 4]), x, b.constant(np.ones((3, 3), np.float32)),
                             b_transpose=True),
         r"^gemm: c \[3, 3\] does not broadcast to \[1, 3\]"),
        (lambda b, x: b.layer_normalization(x, b.constant(np.ones(3, np.float32))),
         r"^layer_normalization: scale constant\[3\] must have shape \[4\]"),
    ],
)  # fmt: skip
def test_bad_arguments(call: Callable[[GraphBuilder, Operand], object], pattern: str) -> None:
    b = builder()
    (x,) = _inputs(b, ("x", "float32", [3, 4]))
    with pytest.raises(GraphError, match=pattern):
        call(b, x)


@pytest.mark.parametrize(
    ("op", "dtype"),
    [
        ("neg", "uint8"),
        ("neg", "uint32"),
        ("exp", "int32"),
        ("relu", "int64"),
        ("softmax", "int32"),
        ("reduce_sum", "uint32"),
        ("reduce_mean", "int8"),
        ("reduce_product", "uint8"),
        ("reduce_max", "uint32"),
        ("argmax", "uint32"),
        ("add", "bool"),
    ],
)
def test_unsupported_dtype_is_refused_at_the_call(op: str, dtype: str) -> None:
    """Types onnxruntime has no CPU kernel for fail at the call, not at compile time."""
    b = builder()
    (x,) = _inputs(b, ("x", dtype, [3, 4]))
    with pytest.raises(GraphError, match=rf"^{op}: .*{dtype}"):
        getattr(b, op)(x, x) if op == "add" else getattr(b, op)(x)


def test_matmul_and_where_refuse_types_without_kernels() -> None:
    b = builder()
    x, c = _inputs(b, ("x", "int8", [3, 3]), ("c", "bool", [3, 3]))
    with pytest.raises(GraphError, match=r"^matmul: a input 'x' has dtype int8"):
        b.matmul(x, x)
    with pytest.raises(GraphError, match=r"^where: value input 'c' has dtype bool"):
        b.where(c, c, c)


def _conv(b: GraphBuilder, filter_shape: list[int], **kw: object) -> Operand:
    x, f = _inputs(b, ("x", "float32", [1, 4, 8, 8]), ("f", "float32", filter_shape))
    return b.conv2d(x, f, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("filter_shape", "kw", "pattern"),
    [
        ([3, 2, 3, 3], {"groups": 2}, r"^conv2d: output channels 3 must be divisible by groups 2"),
        ([4, 3, 3, 3], {}, r"^conv2d: input channels and filter channels \* groups \(3\*1\)"),
        ([4, 4, 3, 3], {"groups": 0}, r"^conv2d: groups must lie in \[1, 65535\]"),
        ([4, 4, 3, 3], {"strides": [0, 1]}, r"^conv2d: strides \[0, 1\] must lie in \[1, 65535\]"),
        ([4, 4, 3, 3], {"strides": [1, MAX_WINDOW_PARAM + 1]}, r"^conv2d: strides .* \[1, 65535\]"),
        ([4, 4, 3, 3], {"dilations": [1, 0]}, r"^conv2d: dilations \[1, 0\] must lie in"),
        ([4, 4, 3, 3], {"dilations": [70000, 1]}, r"^conv2d: dilations \[70000, 1\] must lie"),
        ([4, 4, 3, 3], {"padding": [0, 0, -1, 0]}, r"^conv2d: padding \[0, 0, -1, 0\] must lie"),
        ([4, 4, 3, 3], {"padding": [0, 65536, 0, 0]}, r"^conv2d: padding .* \[0, 65535\]"),
        ([4, 4, 3, 3], {"padding": [1, 1]}, r"^conv2d: padding needs 4 values"),
        ([4, 4, 1, MAX_WINDOW_PARAM + 1], {}, r"^conv2d: kernel size \[1, 65536\] must lie in"),
        ([4, 4, 9, 3], {}, r"^conv2d: window 9 \(dilated to 9\) is larger .* height 8"),
        ([4, 4, 3, 3], {"dilations": [1, 4]}, r"^conv2d: window 3 \(dilated to 9\) .* width 8"),
    ],
)  # fmt: skip
def test_conv2d_bad_parameters(
    filter_shape: list[int], kw: dict[str, object], pattern: str
) -> None:
    with pytest.raises(GraphError, match=pattern):
        _conv(builder(), filter_shape, **kw)


def test_conv2d_window_fits_once_padded() -> None:
    out = _conv(builder(), [4, 4, 9, 3], padding=[1, 0, 0, 0])
    assert out.shape == (1, 4, 1, 6)


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda b, x: b.max_pool2d(x, [9, 1]), r"^max_pool2d: window 9 .* larger than the padded"),
        (lambda b, x: b.max_pool2d(x, [0, 1]), r"^max_pool2d: window dimensions \[0, 1\] must"),
        (lambda b, x: b.average_pool2d(x, [2, 2], strides=[0, 1]), r"^average_pool2d: strides"),
        (lambda b, x: b.average_pool2d(x, [2, 2], padding=[BIG, 0, 0, 0]), r"^average_pool2d: pad"),
    ],
)  # fmt: skip
def test_pool_bad_parameters(call: Callable[[GraphBuilder, Operand], object], pattern: str) -> None:
    b = builder()
    (x,) = _inputs(b, ("x", "float32", [1, 2, 8, 8]))
    with pytest.raises(GraphError, match=pattern):
        call(b, x)


def test_transformer_ops_validate_layouts() -> None:
    b = builder()
    q, kv, past, lens, total, x3, pos = _inputs(
        b,
        ("q", "float32", [1, 3, 24]),
        ("kv", "float32", [1, 3, 12]),
        ("past", "float32", [1, 2, Dim("p", 0, 9), 6]),
        ("lens", "int32", [1]),
        ("total", "int32", []),
        ("x3", "float32", [1, 3, 32]),
        ("pos", "int64", [1, 3]),
    )
    with pytest.raises(
        GraphError, match=r"^group_query_attention: head size 6 must be a multiple of 8"
    ):
        b.group_query_attention(q, kv, kv, past, past, lens, total, num_heads=4, kv_num_heads=2)
    with pytest.raises(
        GraphError, match=r"^group_query_attention: num_heads 3 must be a positive multiple"
    ):
        b.group_query_attention(q, kv, kv, past, past, lens, total, num_heads=3, kv_num_heads=2)
    cos = b.constant(np.ones((8, 4), np.float32))
    with pytest.raises(
        GraphError, match=r"^rotary_embedding: cos and sin caches must both be \[max_position, 8\]"
    ):
        b.rotary_embedding(x3, pos, cos, cos, num_heads=2)
    with pytest.raises(GraphError, match=r"^rotary_embedding: num_heads is required"):
        b.rotary_embedding(x3, pos, cos, cos)
    with pytest.raises(GraphError, match=r"^rotary_embedding: position_ids must be \[B, S\]"):
        b.rotary_embedding(x3, b.constant(np.zeros(3, np.int64)), cos, cos, num_heads=4)
    with pytest.raises(
        GraphError, match=r"^rotary_embedding: rotary_dim 12 must be even and in 1..8"
    ):
        b.rotary_embedding(x3, pos, cos, cos, num_heads=4, rotary_dim=12)


def test_quantized_ops_validate_layouts() -> None:
    b = builder()
    data = b.constant(np.zeros((4, 32), np.uint8))  # 64 4-bit values per row
    ids = b.constant(np.zeros(2, np.int64))
    scales = b.constant(np.ones((4, 4), np.float32))
    gbq = b.gather_block_quantized
    with pytest.raises(GraphError, match=r"^gather_block_quantized: bits must be 2, 4 or 8"):
        gbq(data, ids, scales, k=64, bits=3, block_size=16)
    with pytest.raises(GraphError, match=r"^gather_block_quantized: block_size must be a power"):
        gbq(data, ids, scales, k=64, bits=4, block_size=24)
    with pytest.raises(
        GraphError, match=r"^gather_block_quantized: scales must be float32\[4, 2\]"
    ):
        gbq(data, ids, scales, k=64, bits=4, block_size=32)
    with pytest.raises(
        GraphError, match=r"^gather_block_quantized: zero_points must be uint8\[4, 2\]"
    ):
        gbq(data, ids, scales, b.constant(np.zeros((4, 4), np.uint8)), k=64, bits=4, block_size=16)
    with pytest.raises(
        GraphError, match=r"^gather_block_quantized: data must be uint8\[rows, 64\]"
    ):
        gbq(data, ids, scales, k=64, bits=8, block_size=16)
    (a,) = _inputs(b, ("a", "float32", [2, 64]))
    b_data = b.constant(np.zeros((8, 2, 16), np.uint8))
    computed = b.cast(b.reshape(a, [8, 2, 8]), "uint8")
    with pytest.raises(GraphError, match=r"^matmul_nbits: cast .* must be a weight or a constant"):
        b.matmul_nbits(
            a, computed, b.constant(np.ones(16, np.float32)), k=64, n=8, bits=2, block_size=32
        )
    with pytest.raises(
        GraphError, match=r"^matmul_nbits: zero_points must be uint8 holding 8 bytes"
    ):
        b.matmul_nbits(
            a, b_data, b.constant(np.ones(16, np.float32)), b.constant(np.zeros(16, np.uint8)),
            k=64, n=8, bits=4, block_size=32,
        )  # fmt: skip
    with pytest.raises(
        GraphError, match=r"^matmul_nbits: b constant\[8, 2, 16\] must be uint8\[8, 4, 8\]"
    ):
        b.matmul_nbits(a, b_data, scales, k=64, n=8, bits=4, block_size=16)


# --------------------------------------------------------------------------- build misuse
async def test_build_without_outputs() -> None:
    with pytest.raises(GraphError, match=r"^build: needs at least one output"):
        await builder().build({})


@pytest.mark.parametrize("name", ["x", "w", "", "a:b"])
async def test_build_with_clashing_or_invalid_output_name(name: str) -> None:
    b = builder()
    (x,) = _inputs(b, ("x", "float32", [2]))
    src = MemorySource(bytes(8))
    ref = raw_weight(src, 0, "float32", (2,))
    w = b.input("w", ref.descriptor, weight=ref)
    with pytest.raises(GraphError, match=rf"^build: output name '{name}' clashes"):
        await b.build({name: b.add(x, w)})


async def test_builder_is_closed_after_build() -> None:
    b = builder()
    (x,) = _inputs(b, ("x", "float32", [2]))
    y = b.relu(x)
    await b.build({"y": y})
    with pytest.raises(GraphError, match=r"^add: this builder has already built its graph"):
        b.add(y, y)
    with pytest.raises(GraphError, match=r"^input: this builder has already built"):
        b.input("z", TensorDescriptor("float32", [1]))
    with pytest.raises(GraphError, match=r"^constant: this builder has already built"):
        b.constant(np.zeros(1, np.float32))
    with pytest.raises(GraphError, match=r"^build: this builder has already built"):
        await b.build({"y": y})


def test_input_name_reuse_and_weight_descriptor_mismatch() -> None:
    b = builder()
    _inputs(b, ("x", "float32", [2]))
    with pytest.raises(GraphError, match=r"^input: name 'x' is empty or already used"):
        b.input("x", TensorDescriptor("float32", [2]))
    ref = raw_weight(MemorySource(bytes(64)), 0, "float32", (2, 8))
    with pytest.raises(GraphError, match=r"^input 'w': descriptor float32\[4, 4\] does not match"):
        b.input("w", TensorDescriptor("float32", [4, 4]), weight=ref)
    with pytest.raises(GraphError, match=r"^input 'w': descriptor float16\[2, 8\] does not match"):
        b.input("w", TensorDescriptor("float16", [2, 8]), weight=ref)


def test_constant_of_unsupported_type() -> None:
    with pytest.raises(GraphError, match=r"^constant: unknown data type 'float64'"):
        builder().constant(np.zeros(3))


# --------------------------------------------------------------------------- compute misuse
async def _add_graph() -> Graph:
    b = builder()
    x, y = _inputs(b, ("x", "float32", [Dim("n", 1, 8), 3]), ("y", "float32", [1, 3]))
    return await b.build({"sum": b.add(x, y)})


@pytest.mark.parametrize(
    ("feeds", "pattern"),
    [
        ({"x": np.zeros((2, 3), np.float32)}, r"^compute: missing inputs \['y'\]"),
        (
            {
                "x": np.zeros((2, 3), np.float32),
                "y": np.zeros((1, 3), np.float32),
                "z": np.zeros(1),
            },
            r"^compute: unknown inputs \['z'\]",
        ),
        (
            {"x": np.zeros((2, 3), np.float64), "y": np.zeros((1, 3), np.float32)},
            r"^compute: input 'x' has dtype float64, expected float32",
        ),
        (
            {"x": np.zeros((2, 3, 1), np.float32), "y": np.zeros((1, 3), np.float32)},
            r"^compute: input 'x' has shape \[2, 3, 1\], expected rank 2",
        ),
        (
            {"x": np.zeros((2, 4), np.float32), "y": np.zeros((1, 3), np.float32)},
            r"^compute: input 'x' dim 1 is 4, expected 3",
        ),
        (
            {"x": np.zeros((9, 3), np.float32), "y": np.zeros((1, 3), np.float32)},
            r"^compute: input 'x' dim 0 \(n\) is 9, outside its bounds 1..8",
        ),
    ],
)
async def test_compute_input_errors(feeds: dict[str, np.ndarray], pattern: str) -> None:
    graph = await _add_graph()
    with pytest.raises(ComputeError, match=pattern):
        await graph.compute(feeds)


async def test_dispatch_unknown_output() -> None:
    graph = await _add_graph()
    with pytest.raises(ComputeError, match=r"^dispatch: unknown outputs \['nope'\]"):
        await graph.dispatch(
            {"x": np.zeros((2, 3), np.float32), "y": np.zeros((1, 3), np.float32)},
            {"nope": None},  # type: ignore[dict-item]
        )


async def test_onnxruntime_failure_names_the_builder_call() -> None:
    b = builder()
    x, i = _inputs(b, ("x", "float32", [4, 2]), ("i", "int64", [2]))
    line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
    rows = b.gather(x, i)
    graph = await b.build({"rows": rows})
    with pytest.raises(ComputeError) as info:
        await graph.compute({"x": np.zeros((4, 2), np.float32), "i": np.array([0, 7])})
    message = str(info.value)
    assert message.startswith("onnxruntime failed:")
    assert f"called at test_errors.py:{line}" in message
    assert "gather" in message
    assert isinstance(info.value.__cause__, Exception)  # onnxruntime's error, chained
