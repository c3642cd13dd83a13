"""Fixed wiring of repeated calls: the same results as the general path, nothing aliased."""

from __future__ import annotations

import numpy as np
import pytest

from pullweights import ComputeError, Dim, GraphBuilder, TensorDescriptor, create_context
from pullweights.graph.lowering import lower
from pullweights.runtime.graph import Graph
from pullweights.runtime.tensor import Tensor
from pullweights.runtime.wiring import WIRED_LINK_BYTES

N = Dim("n", 1, 64)


async def _staged(*, wire: bool = True) -> Graph:
    """Three stages: a table lookup, links of shape ``[n, 4]`` from it, an accumulator
    written in place and a fresh output made in the middle stage and read by the last."""
    ctx = create_context("low-power", cache_dir=None)
    b = GraphBuilder(ctx)
    ids = b.input("ids", TensorDescriptor("int64", [N]))
    acc = b.input("acc", TensorDescriptor("float32", [4]))
    table = b.constant(np.arange(40, dtype=np.float32).reshape(10, 4))
    with b.stage("one"):
        rows = b.gather(table, ids, axis=0)  # [n, 4]: a link
    with b.stage("two"):
        doubled = b.mul(rows, b.constant(np.float32(2)))  # a graph output read later
    with b.stage("three"):
        total = b.reduce_sum(b.add(doubled, rows), axes=[0], keep_dims=False)
        new_acc = b.add(acc, total)
    lowered = lower(b, {"doubled": doubled, "acc_out": new_acc}, stages="marked")
    graph = await ctx.compile(lowered)
    graph.wire_repeated_calls = wire
    assert len(graph.stages) == 3
    return graph


def _expected(ids: np.ndarray, acc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = np.arange(40, dtype=np.float32).reshape(10, 4)[ids]
    return rows * 2, acc + (rows * 3).sum(axis=0)


async def test_repeated_calls_are_wired_and_agree_with_the_general_path() -> None:
    """From the second call of a shape on, the stages run wired; every result, the
    in-place accumulator included, equals numpy's and the unwired graph's exactly; a
    result held from an earlier call is never overwritten by a later one."""
    wired, plain = await _staged(), await _staged(wire=False)
    accs = {g: Tensor.create(np.zeros(4, np.float32)) for g in (wired, plain)}
    expected_acc = np.zeros(4, np.float32)
    held = []
    for step in range(5):
        ids = np.array([step % 10, (3 * step + 1) % 10, 9], np.int64)
        want_doubled, expected_acc = _expected(ids, expected_acc)
        for graph in (wired, plain):
            got = await graph.dispatch({"ids": ids, "acc": accs[graph]}, {"acc_out": accs[graph]})
            np.testing.assert_array_equal(got["doubled"].read(), want_doubled)
            np.testing.assert_array_equal(accs[graph].read(), expected_acc)
            if graph is wired:
                held.append((got["doubled"], want_doubled))
        assert (wired._wiring is not None) == (step >= 1)
    assert plain._wiring is None
    for tensor, want in held:  # earlier outputs kept their values
        np.testing.assert_array_equal(tensor.read(), want)


async def test_other_shapes_and_other_targets_take_their_own_path() -> None:
    """A call of other shapes runs the general path and leaves the wiring in place; a
    wiring of the new shape replaces it once that shape repeats; a different output
    tensor under the same name is written instead of the one bound before."""
    graph = await _staged()
    acc = Tensor.create(np.zeros(4, np.float32))
    ids = np.array([1, 2], np.int64)
    for _ in range(3):
        await graph.dispatch({"ids": ids, "acc": acc}, {"acc_out": acc})
    wiring = graph._wiring
    assert wiring is not None
    longer = np.array([4, 5, 6, 7, 8], np.int64)
    other = Tensor.create(np.full(4, 100, np.float32))
    got = await graph.dispatch({"ids": longer, "acc": other}, {"acc_out": other})
    np.testing.assert_array_equal(got["doubled"].read(), _expected(longer, other.read())[0])
    assert graph._wiring is wiring  # one call of another shape: kept
    before = acc.read().copy()
    fresh = Tensor.create(np.zeros(4, np.float32))
    await graph.dispatch({"ids": ids, "acc": fresh}, {"acc_out": fresh})  # wired, new target
    np.testing.assert_array_equal(fresh.read(), _expected(ids, np.zeros(4, np.float32))[1])
    np.testing.assert_array_equal(acc.read(), before)  # the old target untouched
    for _ in range(2):
        await graph.dispatch({"ids": longer, "acc": other}, {"acc_out": other})
    assert graph._wiring is not None and graph._wiring is not wiring


async def test_a_failed_wired_call_is_a_compute_error_and_the_wiring_is_made_again() -> None:
    """An id outside the table (onnxruntime fails inside stage one) raises ComputeError
    naming the stage; the wiring is dropped and made again by the next repeated calls."""
    graph = await _staged()
    acc = Tensor.create(np.zeros(4, np.float32))
    for _ in range(2):
        await graph.dispatch({"ids": np.array([1, 2], np.int64), "acc": acc}, {"acc_out": acc})
    assert graph._wiring is not None
    with pytest.raises(ComputeError, match="stage 'one'"):
        await graph.dispatch({"ids": np.array([1, 99], np.int64), "acc": acc}, {"acc_out": acc})
    assert graph._wiring is None
    for _ in range(2):
        got = await graph.dispatch(
            {"ids": np.array([3, 4], np.int64), "acc": acc}, {"acc_out": acc}
        )
    np.testing.assert_array_equal(got["doubled"].read(), _expected(np.array([3, 4]), acc.read())[0])
    assert graph._wiring is not None


async def test_links_of_derived_or_large_shapes_are_never_wired() -> None:
    """A link whose length is not an input's dimension (a concat: ``n + n``) and links
    larger than the wiring may keep both leave every call on the general path."""
    ctx = create_context("low-power", cache_dir=None)
    b = GraphBuilder(ctx)
    x = b.input("x", TensorDescriptor("float32", [N]))
    with b.stage("one"):
        both = b.concat([x, x], axis=0)  # [n_plus_n]
    with b.stage("two"):
        y = b.mul(both, both)
    graph = await ctx.compile(lower(b, {"y": y}, stages="marked"))
    big_n = Dim("big", 1, WIRED_LINK_BYTES)
    b2 = GraphBuilder(ctx)
    z = b2.input("z", TensorDescriptor("float32", [big_n]))
    with b2.stage("one"):
        doubled = b2.add(z, z)
    with b2.stage("two"):
        out = b2.mul(doubled, doubled)
    big = await ctx.compile(lower(b2, {"out": out}, stages="marked"))
    xs = np.arange(3, dtype=np.float32)
    zs = np.ones(WIRED_LINK_BYTES // 4 + 1, np.float32)
    for _ in range(3):
        got = await graph.compute({"x": xs})
        np.testing.assert_array_equal(got["y"], np.concatenate([xs, xs]) ** 2)
        got = await big.compute({"z": zs})
        assert got["out"][0] == 4
    assert graph._wiring is None and big._wiring is None
