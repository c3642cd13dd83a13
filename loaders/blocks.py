"""Transformer pieces shared by the architecture files, and the decoder graph's inputs.

A decoder graph takes, for one step of ``T`` new tokens (any ``T`` from 1 to the context):

==========================  ==================================  =============================
input                       type                                holds
==========================  ==================================  =============================
``input_ids``               ``int64[T]``                        the new tokens
``logits_index``            ``int64[L]``                        rows of the step whose
                                                                logits to compute
``seqlens_k``               ``int32[1]``                        ``past + T - 1``
``total_sequence_length``   ``int32[]``                         ``past + T``
``past_key.{i}`` /          ``float32[1, kv_heads, C, head]``   layer ``i``'s KV cache
``past_value.{i}``
``rope_cos.{j}`` /          ``float32[C, head / 2]``            RoPE tables (one pair per
``rope_sin.{j}``                                                base and scaling)
==========================  ==================================  =============================

and returns ``logits`` (``float32[L, vocab]``) and ``present_key.{i}`` /
``present_value.{i}``. ``C`` is symbolic in the graph (one compiled graph for every
context length); the caches are allocated with the full context ``C`` as their length:
``GroupQueryAttention`` then works in its shared-buffer mode, where binding the same
tensor as ``past_*`` and ``present_*`` writes the new rows in place (no copy of the cache
per token); an empty cache (``past = 0``) is the first prompt. Rotary embedding runs inside
``GroupQueryAttention`` (``do_rotary`` with cos/sin caches), at positions
``past .. past + T - 1``. Measured on onnxruntime 1.31 CPU against a numpy reference
(max error ~5e-7 for prompts, chunked prompts and token-by-token decoding): shared-buffer
updates, ``do_rotary`` (interleaved and NeoX), ``local_window_size = W`` (query ``q`` sees
key ``k`` when ``q - k < W``, as HF's and llama.cpp's sliding windows) and ``softcap``.
The ``q_norm_weight`` / ``k_norm_weight`` inputs are not honoured on CPU, so Q/K norms are
separate ``SimplifiedLayerNormalization`` nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from loaders.config import ModelConfig
from loaders.weights import WeightMap
from pullweights.descriptor import Dim, TensorDescriptor
from pullweights.gguf.stacked import stack_members
from pullweights.graph.builder import GraphBuilder
from pullweights.graph.operand import Operand

__all__ = [
    "Architecture",
    "DecoderInputs",
    "attention",
    "feed_forward",
    "output_logits",
    "rms_norm",
    "rope_tables",
]

Activation = Literal["silu", "gelu_tanh"]


def rope_tables(
    head_dim: int,
    base: float,
    max_positions: int,
    position_scale: float = 1.0,
    freq_factors: tuple[float, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of ``pos * scale * base**(-2i / head_dim) / factor_i``:
    ``float32[max_positions, head_dim / 2]``, computed in float64, rounded once."""
    inv_freq = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    if freq_factors is not None:
        inv_freq = inv_freq / np.asarray(freq_factors, dtype=np.float64)
    angles = (np.arange(max_positions, dtype=np.float64) * position_scale)[:, None] * inv_freq
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


@dataclass
class DecoderInputs:
    """The inputs of a decoder graph and the outputs it collects (see the module docs).

    The graph does not depend on the context length: the KV caches' length and the RoPE
    tables' rows are symbolic (bounded by the model's training context), so one
    compiled (and saved) graph serves every ``context``; the caches and tables of the
    chosen length are values bound at run time (:attr:`tables`).
    """

    builder: GraphBuilder
    config: ModelConfig
    context: int
    tokens: Dim
    cache_length: Dim
    input_ids: Operand
    logits_index: Operand
    seqlens_k: Operand
    total_length: Operand
    presents: dict[str, Operand] = field(default_factory=dict)
    #: RoPE cos/sin tables of ``context`` rows, by input name: bound on every run.
    tables: dict[str, np.ndarray] = field(default_factory=dict)
    _rope: dict[tuple[float | None, float, tuple[float, ...] | None], tuple[Operand, Operand]] = (
        field(default_factory=dict)
    )

    @classmethod
    def declare(cls, b: GraphBuilder, config: ModelConfig, context: int) -> DecoderInputs:
        """Declare the step inputs of a graph whose KV caches hold ``context`` positions."""
        limit = max(context, config.train_context)
        tokens = Dim("tokens", 1, context)
        n_logits = Dim("n_logits", 1, context)
        return cls(
            builder=b,
            config=config,
            context=context,
            tokens=tokens,
            cache_length=Dim("cache_length", 1, limit),
            input_ids=b.input("input_ids", TensorDescriptor("int64", [tokens])),
            logits_index=b.input("logits_index", TensorDescriptor("int64", [n_logits])),
            seqlens_k=b.input("seqlens_k", TensorDescriptor("int32", [1])),
            total_length=b.input("total_sequence_length", TensorDescriptor("int32", [])),
        )

    @property
    def cache_descriptor(self) -> TensorDescriptor:
        """``float32[1, kv_heads, context, head_dim]``: one layer's key (or value) cache."""
        c = self.config
        return TensorDescriptor("float32", [1, c.n_kv_heads, self.context, c.head_dim])

    def past(self, layer: int) -> tuple[Operand, Operand]:
        """Layer ``layer``'s key and value cache inputs (of symbolic length)."""
        b = self.builder
        c = self.config
        desc = TensorDescriptor("float32", [1, c.n_kv_heads, self.cache_length, c.head_dim])
        return b.input(f"past_key.{layer}", desc), b.input(f"past_value.{layer}", desc)

    def rope(self, layer: int) -> tuple[Operand, Operand]:
        """cos/sin caches for ``layer`` (shared by layers with the same base and scale)."""
        c = self.config
        local = c.is_sliding(layer) and c.rope_base_local is not None
        key = (
            (c.rope_base_local, 1.0, None)
            if local
            else (c.rope_base, c.rope_position_scale, c.rope_freq_factors)
        )
        if key not in self._rope:
            base, scale, factors = key
            assert base is not None
            cos, sin = rope_tables(c.head_dim, base, self.context, scale, factors)
            index = len(self._rope)
            desc = TensorDescriptor("float32", [self.cache_length, c.head_dim // 2])
            names = (f"rope_cos.{index}", f"rope_sin.{index}")
            self.tables.update(zip(names, (cos, sin), strict=True))
            self._rope[key] = (
                self.builder.input(names[0], desc),
                self.builder.input(names[1], desc),
            )
        return self._rope[key]


def rms_norm(b: GraphBuilder, x: Operand, weight: Operand, eps: float) -> Operand:
    """``x / sqrt(mean(x**2) + eps) * weight`` over the last axis."""
    return b.rms_normalization(x, weight, axis=-1, epsilon=eps)


def _head_norm(
    b: GraphBuilder, w: WeightMap, x: Operand, name: str, heads: int, config: ModelConfig
) -> Operand:
    """RMS norm of every head of ``x[T, heads * head_dim]`` with weight ``name[head_dim]``."""
    tokens, d = x.shape[0], config.head_dim
    per_head = b.reshape(x, (tokens, heads, d))
    normed = rms_norm(b, per_head, w.raw(name, (d,)), config.rms_eps)
    return b.reshape(normed, (tokens, heads * d))


def attention(b: GraphBuilder, w: WeightMap, io: DecoderInputs, layer: int, x: Operand) -> Operand:
    """Self-attention of block ``layer`` over its KV cache; ``x`` is ``[T, hidden]``.

    Q/K/V projections with optional biases (``attn_q.bias``...), optional per-head Q/K
    RMS norms (``attn_q_norm`` / ``attn_k_norm``), RoPE and causal (sliding-window on
    sliding layers) grouped-query attention, output projection (optional bias).
    """
    c = io.config
    p = f"blk.{layer}."
    q, k, v = w.linears(x, stack_members(p, "attn_qkv"), stack_members(p, "attn_qkv", "bias"))
    if w.has(p + "attn_q_norm.weight"):
        q = _head_norm(b, w, q, p + "attn_q_norm.weight", c.n_heads, c)
        k = _head_norm(b, w, k, p + "attn_k_norm.weight", c.n_kv_heads, c)
    tokens = x.shape[0]
    past_key, past_value = io.past(layer)
    cos, sin = io.rope(layer)
    window = c.sliding_window if c.is_sliding(layer) and c.sliding_window else -1
    out, present_key, present_value = b.group_query_attention(
        b.reshape(q, (1, tokens, c.q_dim)),
        b.reshape(k, (1, tokens, c.kv_dim)),
        b.reshape(v, (1, tokens, c.kv_dim)),
        past_key,
        past_value,
        io.seqlens_k,
        io.total_length,
        num_heads=c.n_heads,
        kv_num_heads=c.n_kv_heads,
        scale=c.scale,
        local_window_size=window,
        softcap=c.attn_logit_softcap,
        cos_cache=cos,
        sin_cache=sin,
        rotary_interleaved=c.rope_interleaved,
    )
    io.presents[f"present_key.{layer}"] = present_key
    io.presents[f"present_value.{layer}"] = present_value
    out2d = b.reshape(out, (tokens, c.q_dim))
    return w.linear(out2d, p + "attn_output.weight", p + "attn_output.bias")


def feed_forward(
    b: GraphBuilder, w: WeightMap, layer: int, x: Operand, activation: Activation
) -> Operand:
    """Gated MLP of block ``layer``: ``down(act(gate(x)) * up(x))``."""
    p = f"blk.{layer}."
    gate = w.linear(x, p + "ffn_gate.weight")  # not stacked with up: see STACKS
    up = w.linear(x, p + "ffn_up.weight")
    act = b.silu(gate) if activation == "silu" else b.gelu(gate, approximate="tanh")
    return w.linear(b.mul(act, up), p + "ffn_down.weight")


def output_logits(b: GraphBuilder, w: WeightMap, io: DecoderInputs, x: Operand) -> Operand:
    """Logits of the rows ``logits_index`` of ``x[T, hidden]``: final norm, output head
    (``output.weight``, or the tied ``token_embd.weight``), optional soft-capping."""
    c = io.config
    rows = b.gather(x, io.logits_index, axis=0)
    h = rms_norm(b, rows, w.raw("output_norm.weight", (c.hidden,)), c.rms_eps)
    head = "output.weight" if w.has("output.weight") else "token_embd.weight"
    logits = w.linear(h, head)
    if c.final_logit_softcap:
        cap = b.constant(np.float32(c.final_logit_softcap))
        logits = b.mul(b.tanh(b.div(logits, cap)), cap)
    return logits


@dataclass(frozen=True)
class Architecture:
    """One architecture file's entry points, registered by ``general.architecture``.

    ``config`` reads the metadata (plus the vocabulary size); ``build`` declares the whole
    decoder in a builder and returns the logits operand.
    """

    name: str
    config: Callable[[Mapping[str, object], int], ModelConfig]
    build: Callable[[GraphBuilder, WeightMap, DecoderInputs], Operand]
    aliases: tuple[str, ...] = ()
