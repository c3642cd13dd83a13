"""Llama (and Mistral-style) decoders: pre-norm blocks, grouped-query attention, SwiGLU.

llama.cpp's converter permutes the rows of ``attn_q`` / ``attn_k`` per head so that RoPE
rotates interleaved pairs ``(2i, 2i + 1)``: the rotation here is interleaved. Optional
parts are used when the file has them: Q/K/V/O biases, a tied output head (no
``output.weight``), linear RoPE scaling and a sliding window on every layer
(``attention.sliding_window``, Mistral style).

Block: ``x += attn(attn_norm(x))``, ``x += down(silu(gate(h)) * up(h))`` with
``h = ffn_norm(x)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from loaders.blocks import (
    Architecture,
    DecoderInputs,
    attention,
    feed_forward,
    output_logits,
    rms_norm,
)
from loaders.config import ModelConfig
from loaders.weights import WeightMap
from pullweights.graph.builder import GraphBuilder
from pullweights.graph.operand import Operand

__all__ = ["LLAMA", "pre_norm_decoder"]


def config(metadata: Mapping[str, object], vocab_size: int) -> ModelConfig:
    """llama hyper-parameters from the metadata; RoPE on interleaved pairs."""
    return replace(
        ModelConfig.from_metadata(metadata, vocab_size=vocab_size), rope_interleaved=True
    )


def pre_norm_decoder(b: GraphBuilder, w: WeightMap, io: DecoderInputs) -> Operand:
    """The llama decoder (shared with qwen2): logits of the rows ``io.logits_index``."""
    c = io.config
    with b.stage("embedding"):
        x = w.embedding(io.input_ids, "token_embd.weight")
    for i in range(c.n_layers):
        p = f"blk.{i}."
        with b.stage(f"layer {i}"):
            h = rms_norm(b, x, w.raw(p + "attn_norm.weight", (c.hidden,)), c.rms_eps)
            x = b.add(x, attention(b, w, io, i, h))
            h = rms_norm(b, x, w.raw(p + "ffn_norm.weight", (c.hidden,)), c.rms_eps)
            x = b.add(x, feed_forward(b, w, i, h, "silu"))
    with b.stage("head"):
        return output_logits(b, w, io, x)


LLAMA = Architecture("llama", config, pre_norm_decoder, aliases=("mistral",))
