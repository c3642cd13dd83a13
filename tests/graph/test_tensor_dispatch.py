"""Tensors (onnxruntime values owned by pullweights) and Graph.dispatch / compute outputs."""

from __future__ import annotations

import numpy as np
import pytest

from pullweights import ComputeError, Dim, Graph, Tensor, TensorDescriptor
from tests.graph.common import CONTEXT, builder


def test_create_from_descriptor_is_zero_filled() -> None:
    t = Tensor.create(TensorDescriptor("float16", [2, 3]))
    assert t.shape == (2, 3) and t.descriptor == TensorDescriptor("float16", [2, 3])
    np.testing.assert_array_equal(t.read(), np.zeros((2, 3), np.float16))
    assert t.ortvalue.shape() == [2, 3] and t.ortvalue.data_type() == "tensor(float16)"


def test_create_from_array_copies() -> None:
    source = np.arange(6, dtype=np.int32).reshape(2, 3)
    t = CONTEXT.create_tensor(source)
    source[0, 0] = 99
    np.testing.assert_array_equal(t.read(), np.arange(6).reshape(2, 3))
    assert t.descriptor.dtype == "int32"


def test_write_read_and_view() -> None:
    t = Tensor.create(TensorDescriptor("float32", [4]))
    t.write(np.array([1, 2, 3, 4]))  # cast on the way in
    copy = t.read()
    copy[0] = -1
    np.testing.assert_array_equal(t.read(), [1, 2, 3, 4])
    t.view()[1] = 20  # the view is the tensor's memory, which the OrtValue wraps
    np.testing.assert_array_equal(t.ortvalue.numpy(), [1, 20, 3, 4])
    with pytest.raises(ComputeError, match=r"^Tensor.write: shape \(3,\) != tensor shape \(4,\)"):
        t.write(np.zeros(3))


def test_create_refuses_symbolic_shapes_and_unsupported_types() -> None:
    with pytest.raises(ComputeError, match=r"^Tensor.create: float32\[n\[1..4\], 2\] has symbolic"):
        Tensor.create(TensorDescriptor("float32", [Dim("n", 1, 4), 2]))
    with pytest.raises(ComputeError, match=r"^Tensor: unknown data type 'float64'"):
        Tensor.create(np.zeros(3))


async def _graph() -> Graph:
    """Outputs declared in the order z, a, m (not sorted)."""
    b = builder()
    x = b.input("x", TensorDescriptor("float32", [Dim("n", 1, 8)]))
    y = b.input("y", TensorDescriptor("float32", [1]))
    return await b.build({"z": b.add(x, y), "a": b.mul(x, y), "m": b.neg(x)})


async def test_outputs_come_back_in_build_order() -> None:
    graph = await _graph()
    assert list(graph.outputs) == ["z", "a", "m"]
    x, y = np.array([1, 2, 3], np.float32), np.array([10], np.float32)
    computed = await graph.compute({"y": y, "x": x})
    assert list(computed) == ["z", "a", "m"]
    np.testing.assert_array_equal(computed["z"], x + 10)
    np.testing.assert_array_equal(computed["a"], x * 10)
    np.testing.assert_array_equal(computed["m"], -x)
    dispatched = await graph.dispatch({"x": x, "y": y})
    assert list(dispatched) == ["z", "a", "m"]
    assert all(isinstance(t, Tensor) for t in dispatched.values())
    for name in ("z", "a", "m"):
        np.testing.assert_array_equal(dispatched[name].read(), computed[name])


async def test_dispatch_writes_bound_outputs_in_place() -> None:
    graph = await _graph()
    x = Tensor.create(np.array([1, 2, 3], np.float32))
    y = Tensor.create(np.array([0.5], np.float32))
    out_a = Tensor.create(TensorDescriptor("float32", [3]))
    pointer = out_a.ortvalue.data_ptr()
    result = await graph.dispatch({"x": x, "y": y}, {"a": out_a})
    assert result["a"] is out_a and out_a.ortvalue.data_ptr() == pointer
    np.testing.assert_array_equal(out_a.read(), [0.5, 1, 1.5])
    assert result["z"] is not out_a and result["m"] is not out_a  # new tensors
    # A second run reuses the same memory.
    x.write(np.array([4, 4, 4], np.float32))
    await graph.dispatch({"x": x, "y": y}, {"a": out_a})
    assert out_a.ortvalue.data_ptr() == pointer
    np.testing.assert_array_equal(out_a.read(), [2, 2, 2])


async def test_dispatch_output_tensor_can_be_fed_back() -> None:
    """An output Tensor wraps onnxruntime's memory; writing it changes the next input."""
    graph = await _graph()
    y = np.array([1], np.float32)
    first = await graph.dispatch({"x": np.array([1, 2], np.float32), "y": y})
    z = first["z"]
    np.testing.assert_array_equal(z.read(), [2, 3])
    z.write(np.array([7, 8], np.float32))
    second = await graph.dispatch({"x": z, "y": y})
    np.testing.assert_array_equal(second["m"].read(), [-7, -8])


async def test_dispatch_in_place_accumulation() -> None:
    """Binding the same tensor as input and output updates it in place (a KV-cache-like use)."""
    b = builder()
    acc = b.input("acc", TensorDescriptor("float32", [4]))
    step = b.input("step", TensorDescriptor("float32", [4]))
    graph = await b.build({"acc_out": b.add(acc, step)})
    state = Tensor.create(TensorDescriptor("float32", [4]))
    pointer = state.ortvalue.data_ptr()
    for _ in range(3):
        await graph.dispatch({"acc": state, "step": np.ones(4, np.float32)}, {"acc_out": state})
    assert state.ortvalue.data_ptr() == pointer
    np.testing.assert_array_equal(state.read(), np.full(4, 3, np.float32))


async def test_dispatch_checks_inputs_like_compute() -> None:
    graph = await _graph()
    with pytest.raises(
        ComputeError, match=r"^compute: input 'x' has dtype int32, expected float32"
    ):
        await graph.dispatch(
            {"x": Tensor.create(np.zeros(2, np.int32)), "y": np.ones(1, np.float32)}
        )
    with pytest.raises(ComputeError, match=r"^compute: input 'x' dim 0 \(n\) is 9, outside"):
        await graph.dispatch({"x": np.zeros(9, np.float32), "y": np.ones(1, np.float32)})
    with pytest.raises(ComputeError, match=r"^onnxruntime failed"):  # bound output too small
        await graph.dispatch(
            {"x": np.zeros(3, np.float32), "y": np.ones(1, np.float32)},
            {"z": Tensor.create(TensorDescriptor("float32", [2]))},
        )


async def test_scalar_inputs_keep_rank_zero() -> None:
    b = builder()
    s = b.input("s", TensorDescriptor("int32", []))
    x = b.input("x", TensorDescriptor("int32", [3]))
    graph = await b.build({"y": b.mul(x, s)})
    computed = await graph.compute({"s": np.array(3, np.int32), "x": np.arange(3, dtype=np.int32)})
    np.testing.assert_array_equal(computed["y"], [0, 3, 6])
    dispatched = await graph.dispatch(
        {"s": np.array(2, np.int32), "x": np.arange(3, dtype=np.int32)}
    )
    np.testing.assert_array_equal(dispatched["y"].read(), [0, 2, 4])


async def test_compute_accepts_non_contiguous_arrays() -> None:
    graph = await _graph()
    x = np.arange(12, dtype=np.float32)[::4]
    result = await graph.compute({"x": x, "y": np.zeros(1, np.float32)})
    np.testing.assert_array_equal(result["z"], [0, 4, 8])


async def test_repeated_dispatches_see_new_contents_new_tensors_and_bad_inputs() -> None:
    """A tensor bound on one call stays bound (not re-bound) while the same tensor comes
    back: its new contents are read, another tensor under the same name is bound in its
    place, and a call with other shapes is checked again."""
    graph = await _graph()
    x = Tensor.create(np.array([1, 2, 3], np.float32))
    y = Tensor.create(np.array([2], np.float32))
    for step in range(3):
        x.write(np.array([1, 2, 3], np.float32) + step)  # same tensor, new contents
        got = await graph.dispatch({"x": x, "y": y})
        np.testing.assert_array_equal(got["a"].read(), (np.array([1, 2, 3]) + step) * 2)
    other = Tensor.create(np.array([5, 6, 7], np.float32))
    got = await graph.dispatch({"x": other, "y": y})
    np.testing.assert_array_equal(got["a"].read(), [10, 12, 14])
    got = await graph.dispatch({"x": x, "y": y})  # and back
    np.testing.assert_array_equal(got["a"].read(), [6, 8, 10])
    with pytest.raises(ComputeError, match="dtype int32"):
        await graph.dispatch({"x": np.array([1, 2, 3], np.int32), "y": y})
    with pytest.raises(ComputeError, match="outside its bounds"):
        await graph.dispatch({"x": np.zeros(9, np.float32), "y": y})
    got = await graph.dispatch({"x": x, "y": y})  # the checked shapes again
    np.testing.assert_array_equal(got["z"].read(), [5, 6, 7])
