"""Gemma 3 (text): sliding and global attention layers, QK-norm, sandwich norms, GeGLU.

Facts the GGUF file does not state, as llama.cpp and transformers assume them:

* every 6th layer (5, 11, 17, ...) is global; the others attend to the last
  ``attention.sliding_window`` positions (512 in the released models);
* sliding layers use RoPE base 10000, global layers the file's ``rope.freq_base``
  (1e6) and its linear ``rope.scaling``;
* attention scale ``1 / sqrt(key_length)`` (``query_pre_attn_scalar``, 256 on 270m);
* embeddings are multiplied by ``sqrt(hidden)``; norm weights already hold HF's ``1 + w``;
* soft-capping only when the metadata names it; the output head is tied to
  ``token_embd`` unless the file has ``output.weight``.

Block: ``x += post_attention_norm(attn(attn_norm(x)))``,
``x += post_ffw_norm(mlp(ffn_norm(x)))`` with ``mlp = down(gelu_tanh(gate) * up)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

import numpy as np

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
from pullweights.errors import FormatError
from pullweights.graph.builder import GraphBuilder
from pullweights.graph.operand import Operand

__all__ = ["GEMMA3"]

SLIDING_WINDOW_PATTERN = 6
SLIDING_ROPE_BASE = 10000.0


def config(metadata: Mapping[str, object], vocab_size: int) -> ModelConfig:
    """gemma3 hyper-parameters: the metadata plus the facts listed in the module docs."""
    base = ModelConfig.from_metadata(metadata, vocab_size=vocab_size)
    if base.sliding_window is None:
        raise FormatError("gemma3: GGUF metadata gemma3.attention.sliding_window is required")
    sliding = frozenset(i for i in range(base.n_layers) if (i + 1) % SLIDING_WINDOW_PATTERN != 0)
    return replace(
        base,
        sliding_layers=sliding,
        rope_base_local=SLIDING_ROPE_BASE,
        attention_scale=1.0 / math.sqrt(base.head_dim),
        embedding_scale=math.sqrt(base.hidden),
    )


def build(b: GraphBuilder, w: WeightMap, io: DecoderInputs) -> Operand:
    """The gemma3 decoder: logits of the rows ``io.logits_index``."""
    c = io.config
    with b.stage("embedding"):
        x = w.embedding(io.input_ids, "token_embd.weight")
        x = b.mul(x, b.constant(np.float32(c.embedding_scale)))
    for i in range(c.n_layers):
        p = f"blk.{i}."

        def norm(x: Operand, name: str, p: str = p) -> Operand:
            return rms_norm(b, x, w.raw(p + name, (c.hidden,)), c.rms_eps)

        with b.stage(f"layer {i}"):
            a = attention(b, w, io, i, norm(x, "attn_norm.weight"))
            x = b.add(x, norm(a, "post_attention_norm.weight"))
            f = feed_forward(b, w, i, norm(x, "ffn_norm.weight"), "gelu_tanh")
            x = b.add(x, norm(f, "post_ffw_norm.weight"))
    with b.stage("head"):
        return output_logits(b, w, io, x)


GEMMA3 = Architecture("gemma3", config, build)
