"""Symbolic dimensions: one compiled graph at many sizes, bound checks at compute time,
zero-size dims, and dims derived by concat, reshape and expand."""

from __future__ import annotations

import numpy as np
import pytest

from pullweights import ComputeError, Dim, Graph, Operand, TensorDescriptor
from tests.graph.common import assert_close, builder, random

SEQ = Dim("seq", 1, 100)


@pytest.fixture(scope="module")
def weights() -> np.ndarray:
    return random(np.random.default_rng(70), (8, 8), "float32")


async def _pipeline(weights: np.ndarray) -> Graph:
    """x[seq, 8] -> matmul -> softmax -> reshape [seq, 2, 4] -> concat with itself."""
    b = builder()
    x = b.input("x", TensorDescriptor("float32", [SEQ, 8]))
    probs = b.softmax(b.matmul(x, b.constant(weights)))
    split = b.reshape(probs, [SEQ, 2, 4])
    doubled = b.concat([split, split], axis=0)
    return await b.build({"probs": probs, "split": split, "doubled": doubled})


@pytest.mark.parametrize("size", [1, 7, 64, 100])
async def test_one_graph_many_sizes(weights: np.ndarray, size: int) -> None:
    graph = await _pipeline(weights)
    x = random(np.random.default_rng(size), (size, 8), "float32")
    result = await graph.compute({"x": x})
    logits = x.astype(np.float64) @ weights
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    # Softmax of an 8-term float32 dot product: a few ulps.
    assert_close(result["probs"], probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(result["split"], result["probs"].reshape(size, 2, 4))
    np.testing.assert_array_equal(result["doubled"], np.concatenate([result["split"]] * 2))


async def test_same_graph_reused_across_sizes(weights: np.ndarray) -> None:
    graph = await _pipeline(weights)
    for size in (3, 50, 1, 100, 3):
        result = await graph.compute({"x": np.ones((size, 8), np.float32)})
        assert result["doubled"].shape == (2 * size, 2, 4)


@pytest.mark.parametrize("size", [0, 101, 1000])
async def test_bound_violation(weights: np.ndarray, size: int) -> None:
    graph = await _pipeline(weights)
    with pytest.raises(ComputeError) as info:
        await graph.compute({"x": np.zeros((size, 8), np.float32)})
    message = str(info.value)
    assert "seq" in message and "1..100" in message and str(size) in message and "'x'" in message


async def test_shared_dim_must_agree() -> None:
    b = builder()
    x = b.input("x", TensorDescriptor("float32", [SEQ, 4]))
    y = b.input("y", TensorDescriptor("float32", [SEQ, 4]))
    graph = await b.build({"sum": b.add(x, y)})
    ok = await graph.compute({"x": np.ones((3, 4), np.float32), "y": np.ones((3, 4), np.float32)})
    np.testing.assert_array_equal(ok["sum"], np.full((3, 4), 2, np.float32))
    with pytest.raises(ComputeError, match=r"seq is 3 in input 'x' but 5 in input 'y'"):
        await graph.compute({"x": np.ones((3, 4), np.float32), "y": np.ones((5, 4), np.float32)})


async def test_empty_kv_cache_concatenated_with_new_keys() -> None:
    """A past of length 0 (Dim min 0) joined with new keys, then attention over them."""
    past, new = Dim("past", 0, 16), Dim("new", 1, 16)
    b = builder()
    q = b.input("q", TensorDescriptor("float32", [new, 8]))
    cache = b.input("cache", TensorDescriptor("float32", [past, 8]))
    keys_in = b.input("new_keys", TensorDescriptor("float32", [new, 8]))
    keys = b.concat([cache, keys_in], axis=0)
    total = keys.shape[0]
    assert isinstance(total, Dim) and (total.min_size, total.max_size) == (1, 32)
    probs = b.softmax(b.matmul(q, b.transpose(keys)))
    graph = await b.build({"keys": keys, "probs": probs})
    rng = np.random.default_rng(71)
    for past_len in (0, 5):
        qa, ka = random(rng, (3, 8), "float32"), random(rng, (3, 8), "float32")
        ca = random(rng, (past_len, 8), "float32")
        result = await graph.compute({"q": qa, "cache": ca, "new_keys": ka})
        all_keys = np.concatenate([ca, ka])
        np.testing.assert_array_equal(result["keys"], all_keys)
        scores = qa.astype(np.float64) @ all_keys.T
        want = np.exp(scores - scores.max(-1, keepdims=True))
        assert_close(result["probs"], want / want.sum(-1, keepdims=True), rtol=1e-5, atol=1e-6)


async def test_matmul_and_softmax_over_zero_length() -> None:
    past = Dim("past", 0, 16)
    b = builder()
    q = b.input("q", TensorDescriptor("float32", [1, 8]))
    k = b.input("k", TensorDescriptor("float32", [past, 8]))
    scores = b.matmul(q, b.transpose(k))
    graph = await b.build(
        {"scores": scores, "probs": b.softmax(scores), "sum": b.reduce_sum(k, [0])}
    )
    result = await graph.compute(
        {"q": np.ones((1, 8), np.float32), "k": np.zeros((0, 8), np.float32)}
    )
    assert result["scores"].shape == (1, 0) and result["probs"].shape == (1, 0)
    np.testing.assert_array_equal(result["sum"], np.zeros(8, np.float32))


async def test_derived_dim_from_concat_is_usable_downstream() -> None:
    a_dim, b_dim = Dim("a", 1, 4), Dim("b", 2, 6)
    b = builder()
    a = b.input("a", TensorDescriptor("int32", [a_dim, 4]))
    c = b.input("c", TensorDescriptor("int32", [b_dim, 4]))
    joined = b.concat([a, c, a], axis=0)
    derived = joined.shape[0]
    assert isinstance(derived, Dim) and (derived.min_size, derived.max_size) == (4, 14)
    # The derived dim names a reshape target; its run-time value is read from `joined`.
    reshaped = b.reshape(joined, [derived, 2, 2])
    graph = await b.build({"reshaped": reshaped})
    x, y = np.arange(8, dtype=np.int32).reshape(2, 4), np.arange(12, dtype=np.int32).reshape(3, 4)
    got = (await graph.compute({"a": x, "c": y}))["reshaped"]
    np.testing.assert_array_equal(got, np.concatenate([x, y, x]).reshape(7, 2, 2))


async def test_concat_with_static_part_makes_bounded_dim() -> None:
    b = builder()
    x = b.input("x", TensorDescriptor("float32", [SEQ, 2]))
    joined = b.concat([b.constant(np.zeros((3, 2), np.float32)), x], axis=0)
    dim = joined.shape[0]
    assert isinstance(dim, Dim) and (dim.min_size, dim.max_size) == (4, 103)
    graph = await b.build({"out": joined})
    assert (await graph.compute({"x": np.ones((5, 2), np.float32)}))["out"].shape == (8, 2)


async def test_reshape_with_symbolic_dims() -> None:
    batch = Dim("batch", 1, 4)
    b = builder()
    x = b.input("x", TensorDescriptor("float16", [batch, SEQ, 8]))
    heads = b.reshape(x, [batch, SEQ, 2, 4])
    back = b.reshape(b.transpose(heads, [0, 2, 1, 3]), [batch, 2, SEQ, 4])
    graph = await b.build({"heads": heads, "back": back})
    data = random(np.random.default_rng(72), (3, 9, 8), "float16")
    result = await graph.compute({"x": data})
    np.testing.assert_array_equal(result["heads"], data.reshape(3, 9, 2, 4))
    np.testing.assert_array_equal(result["back"], data.reshape(3, 9, 2, 4).transpose(0, 2, 1, 3))


async def test_expand_to_symbolic_shape() -> None:
    b = builder()
    x = b.input("x", TensorDescriptor("float32", [SEQ, 4]))
    bias = b.constant(np.arange(4, dtype=np.float32).reshape(1, 4))
    expanded = b.expand(bias, [SEQ, 4])
    assert expanded.shape == (SEQ, 4)
    graph = await b.build({"sum": b.add(x, expanded), "expanded": expanded})
    result = await graph.compute({"x": np.ones((6, 4), np.float32)})
    np.testing.assert_array_equal(
        result["expanded"], np.tile(np.arange(4, dtype=np.float32), (6, 1))
    )
    np.testing.assert_array_equal(result["sum"], result["expanded"] + 1)


async def test_slice_and_gather_with_symbolic_dims() -> None:
    ids = Dim("ids", 1, 10)
    b = builder()
    x = b.input("x", TensorDescriptor("float32", [SEQ, 6]))
    i = b.input("i", TensorDescriptor("int64", [ids]))
    head = b.slice(x, [0, 2], [1, 3])  # within seq's minimum of 1
    rows = b.gather(x, i)
    assert rows.shape == (ids, 6)
    graph = await b.build({"head": head, "rows": rows})
    data = random(np.random.default_rng(73), (5, 6), "float32")
    index = np.array([4, 0, 4], np.int64)
    result = await graph.compute({"x": data, "i": index})
    np.testing.assert_array_equal(result["head"], data[:1, 2:5])
    np.testing.assert_array_equal(result["rows"], data[index])


async def test_gqa_concat_present_dim_is_bounded() -> None:
    past, seq = Dim("past", 0, 32), Dim("q_len", 1, 8)
    b = builder()

    def inp(name: str, shape: list[int | Dim], dtype: str = "float32") -> Operand:
        return b.input(name, TensorDescriptor(dtype, shape))

    _, present, _ = b.group_query_attention(
        inp("q", [1, seq, 32]), inp("k", [1, seq, 16]), inp("v", [1, seq, 16]),
        inp("pk", [1, 1, past, 16]), inp("pv", [1, 1, past, 16]),
        inp("sl", [1], "int32"), inp("tl", [], "int32"),
        num_heads=2, kv_num_heads=1,
    )  # fmt: skip
    total = present.shape[2]
    assert isinstance(total, Dim) and (total.min_size, total.max_size) == (1, 40)
