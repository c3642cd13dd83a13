"""numpy reference forward pass of the ``llama`` architecture, straight from a GGUF file.

Semantics of HF ``modeling_llama`` on the weights as llama.cpp's converter stores them:
attn_q/attn_k rows are permuted per head so that RoPE rotates interleaved pairs
``(2i, 2i+1)`` (llama.cpp ``LLAMA_ROPE_TYPE_NORM``), which equals HF ``rotate_half`` on the
unpermuted weights. Pre-norm decoder blocks: RMSNorm -> GQA attention -> residual, RMSNorm
-> SwiGLU MLP (``down(silu(gate(x)) * up(x))``) -> residual; final RMSNorm; output head is
``output.weight`` or, when absent, the tied ``token_embd.weight``. Optional Q/K/V/O biases
are applied when present (llama.cpp loads them optionally; qwen2 always has Q/K/V ones).
An ``attention.sliding_window`` key makes every layer attend to that many last positions
(HF ``modeling_mistral``; Mistral files are written as ``llama``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .common import F64, RopeStyle, apply_rope, attention, causal_mask, rms_norm, rope_angles, silu
from .gguf_model import GGUFModel
from .numerics import EXACT, Numerics


@dataclass(frozen=True)
class LlamaConfig:
    """Hyper-parameters a llama-style forward pass needs, read from GGUF metadata."""

    hidden: int
    n_layers: int
    n_head: int
    n_kv: int
    head_dim: int
    n_rot: int
    eps: float
    rope_base: float
    rope_position_scale: float
    sliding_window: int | None

    @classmethod
    def from_model(cls, model: GGUFModel) -> LlamaConfig:
        """Read ``{arch}.*`` keys with llama.cpp's defaults for the optional ones."""
        hidden = int(model.require("embedding_length"))
        n_head = int(model.require("attention.head_count"))
        head_dim = int(model.meta("attention.key_length", hidden // n_head))
        scaling = model.meta("rope.scaling.type", "none")
        if scaling == "linear":
            position_scale = 1.0 / float(model.require("rope.scaling.factor"))
        elif scaling == "none":
            position_scale = 1.0
        else:
            raise NotImplementedError(f"{model.path}: rope scaling {scaling!r}")
        return cls(
            hidden=hidden,
            n_layers=int(model.require("block_count")),
            n_head=n_head,
            n_kv=int(model.meta("attention.head_count_kv", n_head)),
            head_dim=head_dim,
            n_rot=int(model.meta("rope.dimension_count", head_dim)),
            eps=float(model.require("attention.layer_norm_rms_epsilon")),
            rope_base=float(model.meta("rope.freq_base", 10000.0)),
            rope_position_scale=position_scale,
            sliding_window=model.meta("attention.sliding_window"),
        )


def decoder_forward(
    model: GGUFModel,
    token_ids: Sequence[int],
    rope_style: RopeStyle,
    *,
    numerics: Numerics = EXACT,
    last_only: bool = False,
    hidden_states: list[F64] | None = None,
    sliding_window: bool = False,
) -> F64:
    """Logits ``(seq, vocab)`` (or ``(1, vocab)`` with ``last_only``) of a llama-style model.

    ``hidden_states``, when given, receives the embeddings and each block's output.
    ``sliding_window``: honour the file's ``attention.sliding_window`` (on every layer).
    """
    cfg = LlamaConfig.from_model(model)
    lin = numerics.linear
    seq = len(token_ids)
    x = model.tensor("token_embd.weight")[np.asarray(token_ids)].astype(np.float64)
    angles = rope_angles(
        seq,
        cfg.n_rot,
        cfg.rope_base,
        position_scale=cfg.rope_position_scale,
        freq_factors=model.optional("rope_freqs.weight"),
    )
    mask = causal_mask(seq, cfg.sliding_window if sliding_window else None)
    scale = 1.0 / np.sqrt(cfg.head_dim)
    if hidden_states is not None:
        hidden_states.append(x)
    for i in range(cfg.n_layers):
        p = f"blk.{i}."
        h = rms_norm(x, model.tensor(p + "attn_norm.weight"), cfg.eps)
        q = lin(model, h, p + "attn_q.weight", p + "attn_q.bias").reshape(seq, cfg.n_head, -1)
        k = lin(model, h, p + "attn_k.weight", p + "attn_k.bias").reshape(seq, cfg.n_kv, -1)
        v = lin(model, h, p + "attn_v.weight", p + "attn_v.bias").reshape(seq, cfg.n_kv, -1)
        q = apply_rope(q, angles, rope_style)
        k = apply_rope(k, angles, rope_style)
        a = attention(q, k, v, mask, scale)
        x = x + lin(model, a, p + "attn_output.weight", p + "attn_output.bias")
        h = rms_norm(x, model.tensor(p + "ffn_norm.weight"), cfg.eps)
        gate = lin(model, h, p + "ffn_gate.weight")
        up = lin(model, h, p + "ffn_up.weight")
        x = x + lin(model, silu(gate) * up, p + "ffn_down.weight")
        if hidden_states is not None:
            hidden_states.append(x)
    if last_only:
        x = x[-1:]
    x = rms_norm(x, model.tensor("output_norm.weight"), cfg.eps)
    head = "output.weight" if model.optional("output.weight") is not None else "token_embd.weight"
    return lin(model, x, head)


def forward(
    model: GGUFModel,
    token_ids: Sequence[int],
    *,
    numerics: Numerics = EXACT,
    last_only: bool = False,
    hidden_states: list[F64] | None = None,
) -> F64:
    """Logits of a ``llama`` GGUF: interleaved RoPE on the converter-permuted Q/K."""
    return decoder_forward(
        model,
        token_ids,
        "interleaved",
        numerics=numerics,
        last_only=last_only,
        hidden_states=hidden_states,
        sliding_window=True,
    )
