"""Transformer contrib ops against independent numpy implementations: rotary embedding,
grouped-query attention over a KV cache (concat and shared-buffer modes), and the
block-quantized gather."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from pullweights import Dim, Graph, GraphBuilder, Operand, Tensor, TensorDescriptor
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

# Attention: softmax over <= 16 keys then a weighted sum of float32 values; onnxruntime
# accumulates in float32, so errors are a few ulps of values of size ~3.
ATTENTION_TOL: dict[str, Tolerance] = {
    "float32": {"rtol": 1e-5, "atol": 2e-6},
    "float16": {"rtol": 4e-3, "atol": 4e-3},
}


# --------------------------------------------------------------------------- rotary
def rope_tables(positions: int, rotary_dim: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin caches ``[positions, rotary_dim / 2]`` for base 10000."""
    inv = 10000.0 ** (-np.arange(rotary_dim // 2) * 2 / rotary_dim)
    angles = np.arange(positions)[:, None] * inv[None]
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


def rotate(
    x: np.ndarray, positions: np.ndarray, cos: np.ndarray, sin: np.ndarray, interleaved: bool
) -> np.ndarray:
    """Rotate ``x[..., S, heads, head]`` at ``positions[..., S]`` (float64).

    The first ``2 * cos.shape[1]`` elements of each head rotate: in pairs (2i, 2i+1) when
    ``interleaved``, else (i, i + rot/2); the rest pass through.
    """
    rot = 2 * cos.shape[1]
    c = cos.astype(np.float64)[positions][..., None, :]
    s = sin.astype(np.float64)[positions][..., None, :]
    out = x.astype(np.float64).copy()
    if interleaved:
        even, odd = out[..., 0:rot:2].copy(), out[..., 1:rot:2].copy()
        out[..., 0:rot:2] = even * c - odd * s
        out[..., 1:rot:2] = odd * c + even * s
    else:
        half = rot // 2
        first, second = out[..., :half].copy(), out[..., half:rot].copy()
        out[..., :half] = first * c - second * s
        out[..., half:rot] = second * c + first * s
    return out


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("rotary_dim", [0, 8])
@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("layout", ["BSD", "BNSH"])
@pytest.mark.parametrize("positions", ["per_token", "offset"])
async def test_rotary_embedding(
    layout: str, interleaved: bool, rotary_dim: int, positions: str, dtype: str
) -> None:
    batch, seq, heads, head = 2, 5, 3, 16
    rng = np.random.default_rng(60)
    x = random(rng, (batch, seq, heads, head), dtype)
    cos, sin = rope_tables(32, rotary_dim or head, dtype)
    if positions == "per_token":  # each row starts elsewhere
        pos_ids = (np.arange(seq)[None] + np.array([[3], [11]])).astype(np.int64)
        pos = pos_ids
    else:  # one offset for the whole batch
        pos_ids = np.array([7], np.int64)
        pos = np.broadcast_to(7 + np.arange(seq), (batch, seq))
    x_in = x.reshape(batch, seq, heads * head) if layout == "BSD" else x.transpose(0, 2, 1, 3)

    def make(g: GraphBuilder, a: Operand, p: Operand) -> Operand:
        return g.rotary_embedding(
            a,
            p,
            g.constant(cos),
            g.constant(sin),
            num_heads=heads if layout == "BSD" else 0,
            rotary_dim=rotary_dim,
            interleaved=interleaved,
        )

    got = await run_op(make, np.ascontiguousarray(x_in), pos_ids)
    got = got.reshape(batch, seq, heads, head) if layout == "BSD" else got.transpose(0, 2, 1, 3)
    expected = rotate(x, pos, cos, sin, interleaved)
    assert_close(got, expected, dtype=dtype, **TOLERANCE[dtype])


# --------------------------------------------------------------------------- attention
@dataclass
class ReferenceAttention:
    """Causal grouped-query attention over a growing per-row KV cache, in float64."""

    num_heads: int
    kv_heads: int
    head: int
    batch: int
    local_window_size: int = -1
    softcap: float = 0.0
    scale: float | None = None
    rope: tuple[np.ndarray, np.ndarray, bool] | None = None
    keys: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        empty = np.zeros((self.kv_heads, 0, self.head))
        self.keys = [empty] * self.batch
        self.values = [empty] * self.batch

    def step(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, new: list[int]) -> np.ndarray:
        """Append ``new[b]`` tokens per row (rows right-padded to ``S``); return the
        attention output ``[B, S, heads * head]`` (padding positions left at 0)."""
        seq = q.shape[1]
        out = np.zeros(q.shape)
        for b in range(self.batch):
            n, past = new[b], self.keys[b].shape[1]
            pos = past + np.arange(n)
            qb = q[b, :n].reshape(n, self.num_heads, self.head).astype(np.float64)
            kb = k[b, :n].reshape(n, self.kv_heads, self.head).astype(np.float64)
            vb = v[b, :n].reshape(n, self.kv_heads, self.head).astype(np.float64)
            if self.rope is not None:
                cos, sin, interleaved = self.rope
                qb, kb = (
                    rotate(qb, pos, cos, sin, interleaved),
                    rotate(kb, pos, cos, sin, interleaved),
                )
            self.keys[b] = np.concatenate([self.keys[b], kb.transpose(1, 0, 2)], axis=1)
            self.values[b] = np.concatenate([self.values[b], vb.transpose(1, 0, 2)], axis=1)
            group = self.num_heads // self.kv_heads
            keys = np.repeat(self.keys[b], group, axis=0)  # [heads, T, head]
            values = np.repeat(self.values[b], group, axis=0)
            scores = np.einsum("shd,htd->hst", qb, keys) * (self.scale or self.head**-0.5)
            if self.softcap > 0:
                scores = self.softcap * np.tanh(scores / self.softcap)
            key_pos = np.arange(keys.shape[1])
            visible = key_pos[None] <= pos[:, None]
            if self.local_window_size > 0:
                visible &= key_pos[None] > pos[:, None] - self.local_window_size
            scores = np.where(visible[None], scores, -np.inf)
            probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
            probs /= probs.sum(axis=-1, keepdims=True)
            out[b, :n] = np.einsum("hst,htd->shd", probs, values).reshape(n, -1)
        assert out.shape[1] == seq
        return out

    def cache(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        return self.keys[b], self.values[b]


async def build_attention(
    *,
    batch: int,
    past: int | Dim,
    num_heads: int = 4,
    kv_heads: int = 2,
    head: int = 16,
    dtype: str = "float32",
    max_seq: int = 16,
    rope: tuple[np.ndarray, np.ndarray, bool] | None = None,
    **options: Any,
) -> Graph:
    """A graph around one group_query_attention call; inputs q k v pk pv seqlens total."""
    seq = Dim("seq", 1, max_seq)
    b = builder()

    def inp(name: str, shape: list[int | Dim], dt: str = dtype) -> Operand:
        return b.input(name, TensorDescriptor(dt, shape))

    rotary: dict[str, Any] = {}
    if rope is not None:
        cos, sin, interleaved = rope
        rotary = {
            "cos_cache": b.constant(cos),
            "sin_cache": b.constant(sin),
            "rotary_interleaved": interleaved,
        }
    out, present_k, present_v = b.group_query_attention(
        inp("q", [batch, seq, num_heads * head]),
        inp("k", [batch, seq, kv_heads * head]),
        inp("v", [batch, seq, kv_heads * head]),
        inp("pk", [batch, kv_heads, past, head]),
        inp("pv", [batch, kv_heads, past, head]),
        inp("seqlens", [batch], "int32"),
        inp("total", [], "int32"),
        num_heads=num_heads,
        kv_num_heads=kv_heads,
        **rotary,
        **options,
    )
    return await b.build({"out": out, "present_k": present_k, "present_v": present_v})


def _qkv(
    rng: np.random.Generator, batch: int, seq: int, num_heads: int, kv_heads: int, dtype: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    head = 16
    return (
        random(rng, (batch, seq, num_heads * head), dtype),
        random(rng, (batch, seq, kv_heads * head), dtype),
        random(rng, (batch, seq, kv_heads * head), dtype),
    )


def _lengths(past: list[int], new: list[int]) -> dict[str, np.ndarray]:
    """seqlens_k = past + new - 1 per row; total_sequence_length = max(past + new)."""
    totals = np.array(past) + np.array(new)
    return {"seqlens": (totals - 1).astype(np.int32), "total": np.array(totals.max(), np.int32)}


def _to_bnsh(x: np.ndarray, heads: int) -> np.ndarray:
    b, s, _ = x.shape
    return x.reshape(b, s, heads, -1).transpose(0, 2, 1, 3)


OPTIONS: dict[str, dict[str, Any]] = {
    "plain": {},
    "window": {"local_window_size": 2},
    "softcap": {"softcap": 0.5},
    "scale": {"scale": 0.3},
}


@pytest.mark.parametrize(("num_heads", "kv_heads"), [(4, 2), (4, 1), (2, 2)])
@pytest.mark.parametrize("option", OPTIONS)
async def test_gqa_concat_mode(num_heads: int, kv_heads: int, option: str) -> None:
    """Symbolic past: prompt with an empty past, two decode steps, a later prompt chunk."""
    rng = np.random.default_rng(61)
    graph = await build_attention(
        batch=1, past=Dim("past", 0, 32), num_heads=num_heads, kv_heads=kv_heads,
        **OPTIONS[option],
    )  # fmt: skip
    ref = ReferenceAttention(num_heads, kv_heads, 16, 1, **OPTIONS[option])
    pk = pv = np.zeros((1, kv_heads, 0, 16), np.float32)
    for steps, seq in enumerate([5, 1, 1, 3]):
        q, k, v = _qkv(rng, 1, seq, num_heads, kv_heads, "float32")
        past = pk.shape[2]
        result = await graph.compute(
            {"q": q, "k": k, "v": v, "pk": pk, "pv": pv, **_lengths([past], [seq])}
        )
        expected = ref.step(q, k, v, [seq])
        assert_close(result["out"], expected, **ATTENTION_TOL["float32"])
        # The presents are the past followed by the new rows, exactly.
        assert result["present_k"].shape == (1, kv_heads, past + seq, 16), steps
        np.testing.assert_array_equal(result["present_k"][:, :, :past], pk)
        np.testing.assert_array_equal(result["present_k"][:, :, past:], _to_bnsh(k, kv_heads))
        np.testing.assert_array_equal(result["present_v"][:, :, past:], _to_bnsh(v, kv_heads))
        pk, pv = result["present_k"], result["present_v"]


async def test_gqa_concat_mode_batch_of_two() -> None:
    rng = np.random.default_rng(62)
    graph = await build_attention(batch=2, past=Dim("past", 0, 32))
    ref = ReferenceAttention(4, 2, 16, 2)
    pk = pv = np.zeros((2, 2, 0, 16), np.float32)
    for seq in [4, 1, 1]:  # batch > 1 allows seq > 1 only for the first prompt
        q, k, v = _qkv(rng, 2, seq, 4, 2, "float32")
        past = pk.shape[2]
        result = await graph.compute(
            {"q": q, "k": k, "v": v, "pk": pk, "pv": pv, **_lengths([past] * 2, [seq] * 2)}
        )
        assert_close(result["out"], ref.step(q, k, v, [seq, seq]), **ATTENTION_TOL["float32"])
        pk, pv = result["present_k"], result["present_v"]


async def _run_shared_buffer(
    *,
    batch: int,
    steps: list[list[int]],
    dtype: str = "float32",
    rope: tuple[np.ndarray, np.ndarray, bool] | None = None,
    **options: Any,
) -> None:
    """Drive a static [B, kv, 16, H] cache bound as both past and present via dispatch."""
    max_seq, kv_heads, head = 16, 2, 16
    rng = np.random.default_rng(63)
    graph = await build_attention(batch=batch, past=max_seq, dtype=dtype, rope=rope, **options)
    cache = TensorDescriptor(dtype, [batch, kv_heads, max_seq, head])
    k_cache, v_cache = Tensor.create(cache), Tensor.create(cache)
    k_ptr, v_ptr = k_cache.ortvalue.data_ptr(), v_cache.ortvalue.data_ptr()
    ref = ReferenceAttention(4, kv_heads, head, batch, rope=rope, **options)
    past = [0] * batch
    for new in steps:
        seq = max(new)
        q, k, v = _qkv(rng, batch, seq, 4, kv_heads, dtype)
        result = await graph.dispatch(
            {"q": q, "k": k, "v": v, "pk": k_cache, "pv": v_cache, **_lengths(past, new)},
            {"present_k": k_cache, "present_v": v_cache},
        )
        assert result["present_k"] is k_cache and result["present_v"] is v_cache
        assert k_cache.ortvalue.data_ptr() == k_ptr and v_cache.ortvalue.data_ptr() == v_ptr
        expected = ref.step(q, k, v, new)
        got = result["out"].read()
        for b in range(batch):
            assert_close(
                got[b, : new[b]], expected[b, : new[b]], dtype=dtype, **ATTENTION_TOL[dtype]
            )
            total = past[b] + new[b]
            want_k, want_v = ref.cache(b)
            tol: Tolerance = (
                {"rtol": 1e-6, "atol": 1e-6} if dtype == "float32" else TOLERANCE[dtype]
            )
            assert_close(k_cache.read()[b, :, :total], want_k, dtype=dtype, **tol)
            assert_close(v_cache.read()[b, :, :total], want_v, dtype=dtype, **tol)
        past = [p + n for p, n in zip(past, new, strict=True)]
    # Rows past the longest sequence were never written.
    assert not k_cache.read()[:, :, max(past) :].any()


@pytest.mark.parametrize("option", OPTIONS)
async def test_gqa_shared_buffer(option: str) -> None:
    await _run_shared_buffer(batch=1, steps=[[5], [1], [1], [3], [1]], **OPTIONS[option])


@pytest.mark.parametrize("interleaved", [False, True])
async def test_gqa_shared_buffer_with_rotary(interleaved: bool) -> None:
    cos, sin = rope_tables(16, 16, "float32")
    await _run_shared_buffer(batch=1, steps=[[5], [1], [2]], rope=(cos, sin, interleaved))


async def test_gqa_shared_buffer_ragged_batch() -> None:
    """Right-padded prompts of 4 and 2 tokens; each row then decodes at its own position."""
    cos, sin = rope_tables(16, 16, "float32")
    await _run_shared_buffer(batch=2, steps=[[4, 2], [1, 1], [1, 1]], rope=(cos, sin, False))


async def test_gqa_float16() -> None:
    cos, sin = rope_tables(16, 16, "float16")
    await _run_shared_buffer(batch=1, steps=[[5], [1]], dtype="float16", rope=(cos, sin, False))


async def test_gqa_static_buffer_through_compute_copies() -> None:
    """compute() passes distinct past/present buffers: the present is a filled copy."""
    rng = np.random.default_rng(64)
    graph = await build_attention(batch=1, past=16)
    ref = ReferenceAttention(4, 2, 16, 1)
    pk = pv = np.zeros((1, 2, 16, 16), np.float32)
    past = 0
    for seq in [3, 1]:
        q, k, v = _qkv(rng, 1, seq, 4, 2, "float32")
        result = await graph.compute(
            {"q": q, "k": k, "v": v, "pk": pk, "pv": pv, **_lengths([past], [seq])}
        )
        assert_close(result["out"], ref.step(q, k, v, [seq]), **ATTENTION_TOL["float32"])
        assert result["present_k"].shape == (1, 2, 16, 16)
        pk, pv = result["present_k"], result["present_v"]
        past += seq
    np.testing.assert_array_equal(pk[0, :, :past], ref.cache(0)[0].astype(np.float32))


async def test_gqa_prompt_only_graph_with_static_empty_past() -> None:
    """A static past of length 0: the presents hold just the new rows."""
    rng = np.random.default_rng(67)
    graph = await build_attention(batch=1, past=0)
    assert graph.outputs["present_k"].shape[2] == Dim("seq", 1, 16)
    q, k, v = _qkv(rng, 1, 6, 4, 2, "float32")
    empty = np.zeros((1, 2, 0, 16), np.float32)
    result = await graph.compute(
        {"q": q, "k": k, "v": v, "pk": empty, "pv": empty, **_lengths([0], [6])}
    )
    expected = ReferenceAttention(4, 2, 16, 1).step(q, k, v, [6])
    assert_close(result["out"], expected, **ATTENTION_TOL["float32"])
    np.testing.assert_array_equal(result["present_k"], _to_bnsh(k, 2))


# --------------------------------------------------------------------------- quantized gather
def quantized_table(
    rng: np.random.Generator, rows: int, k: int, bits: int, block: int, dtype: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(data, scales, packed zero points, raw values q, zero points) of a random table."""
    blocks = -(-k // block)
    q = rng.integers(0, 2**bits, (rows, k))
    scales = rng.uniform(0.01, 1, (rows, blocks)).astype(dtype)
    zp = rng.integers(0, 2**bits, (rows, blocks))
    per = 8 // bits
    padded = np.zeros((rows, -(-blocks // per) * per), np.int64)
    padded[:, :blocks] = zp
    return pack_bits(q, bits), scales, pack_bits(padded, bits), q, zp


def dequantize_rows(
    q: np.ndarray, zp: np.ndarray, scales: np.ndarray, block: int, k: int
) -> np.ndarray:
    scale = np.repeat(scales.astype(np.float64), block, axis=1)[:, :k]
    return np.asarray((q - np.repeat(zp, block, axis=1)[:, :k]) * scale)


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("with_zero_points", [True, False])
@pytest.mark.parametrize(("k", "block"), [(64, 16), (64, 32), (40, 16), (256, 128)])
@pytest.mark.parametrize("index_dtype", ["int64", "int32"])
async def test_gather_block_quantized(
    bits: int, with_zero_points: bool, k: int, block: int, index_dtype: str
) -> None:
    rows = 7
    rng = np.random.default_rng(65)
    data, scales, zp_packed, q, zp = quantized_table(rng, rows, k, bits, block, "float32")
    ids = np.array([[6, 0, -1], [2, 2, 3]], index_dtype)  # 2-D, repeated and negative
    b = builder()
    out = b.gather_block_quantized(
        b.constant(data),
        declare(b, "ids", ids),
        b.constant(scales),
        b.constant(zp_packed) if with_zero_points else None,
        k=k,
        bits=bits,
        block_size=block,
    )
    assert out.shape == (2, 3, k)
    got = (await (await b.build({"rows": out})).compute({"ids": ids}))["rows"]
    zero = zp if with_zero_points else np.full_like(zp, 2 ** (bits - 1))
    expected = dequantize_rows(q, zero, scales, block, k)[ids]
    # (q - zp) * scale is one float32 product per element.
    assert_close(got, expected, rtol=1e-6, atol=1e-6)


async def test_gather_block_quantized_float16_and_out_of_range() -> None:
    rng = np.random.default_rng(66)
    data, scales, zp_packed, q, zp = quantized_table(rng, 5, 32, 4, 16, "float16")
    ids = np.array([4, 5, -6, 1], np.int64)  # 5 and -6 are out of range

    def make(g: GraphBuilder, i: Operand) -> Operand:
        return g.gather_block_quantized(
            g.constant(data), i, g.constant(scales), g.constant(zp_packed),
            k=32, bits=4, block_size=16, dtype="float16",
        )  # fmt: skip

    got = await run_op(make, ids)
    table = dequantize_rows(q, zp, scales, 16, 32)
    assert_close(got[[0, 3]], table[[4, 1]], dtype="float16", **TOLERANCE["float16"])
    # onnxruntime does not fail on an out-of-range index: it returns a row of zeros.
    assert not got[[1, 2]].any()
