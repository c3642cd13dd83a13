"""numpy reference forward pass of the ``gemma3`` (text) architecture, from a GGUF file.

HF ``modeling_gemma3`` (``Gemma3ForCausalLM``) semantics, with the facts the file does not
state taken from HF and llama.cpp (they agree):

- embeddings multiplied by ``sqrt(hidden)`` (a float64 scalar here; HF rounds it to the
  weight dtype, which for float32 weights is the float32 of the same value);
- RMSNorm everywhere as ``norm(x) * w`` where the GGUF ``w`` already holds HF's ``1 + w``;
- block: ``x += post_attention_norm(attn(attn_norm(x)))``,
  ``x += post_ffw_norm(mlp(ffn_norm(x)))``; MLP ``down(gelu_tanh(gate(x)) * up(x))``;
- attention: Q/K RMSNorm per head over ``head_dim`` (``attn_q_norm``/``attn_k_norm``),
  then NeoX RoPE; scale ``1/sqrt(key_length)`` (= ``query_pre_attn_scalar**-0.5``: 256 on
  the real 270m, where it equals ``key_length``; llama.cpp uses ``1/sqrt(key_length)``);
- layer ``i`` is global when ``(i + 1) % 6 == 0`` (5, 11, 17, ...), otherwise it attends
  to the last ``sliding_window`` positions including the current one (``q - k < window``);
- RoPE base ``rope.freq_base`` (1e6) on global layers, 10000 on sliding layers; linear
  ``rope.scaling`` (the 4B+ models) only on global layers, as in llama.cpp;
- final ``tanh`` soft-capping only when ``final_logit_softcapping`` is in the metadata;
- output head tied to ``token_embd`` unless the file has ``output.weight``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .common import F64, apply_rope, attention, causal_mask, rms_norm, rope_angles
from .gguf_model import GGUFModel
from .numerics import EXACT, Numerics

SLIDING_WINDOW_PATTERN = 6
SLIDING_ROPE_BASE = 10000.0


@dataclass(frozen=True)
class Gemma3Config:
    """Hyper-parameters of a gemma3 forward pass, read from GGUF metadata."""

    hidden: int
    n_layers: int
    n_head: int
    n_kv: int
    head_dim: int
    eps: float
    rope_base: float
    global_position_scale: float
    sliding_window: int
    final_logit_softcapping: float | None

    @classmethod
    def from_model(cls, model: GGUFModel) -> Gemma3Config:
        """Read ``gemma3.*`` keys; ``sliding_window`` and the shape keys are required."""
        hidden = int(model.require("embedding_length"))
        n_head = int(model.require("attention.head_count"))
        scaling = model.meta("rope.scaling.type", "none")
        if scaling == "linear":
            position_scale = 1.0 / float(model.require("rope.scaling.factor"))
        elif scaling == "none":
            position_scale = 1.0
        else:
            raise NotImplementedError(f"{model.path}: rope scaling {scaling!r}")
        cap = model.meta("final_logit_softcapping")
        return cls(
            hidden=hidden,
            n_layers=int(model.require("block_count")),
            n_head=n_head,
            n_kv=int(model.meta("attention.head_count_kv", n_head)),
            head_dim=int(model.meta("attention.key_length", hidden // n_head)),
            eps=float(model.require("attention.layer_norm_rms_epsilon")),
            rope_base=float(model.meta("rope.freq_base", 10000.0)),
            global_position_scale=position_scale,
            sliding_window=int(model.require("attention.sliding_window")),
            final_logit_softcapping=None if cap is None else float(cap),
        )

    def is_global(self, layer: int) -> bool:
        """True for the full-attention layers: every 6th (5, 11, 17, ...)."""
        return (layer + 1) % SLIDING_WINDOW_PATTERN == 0


def forward(
    model: GGUFModel,
    token_ids: Sequence[int],
    *,
    numerics: Numerics = EXACT,
    last_only: bool = False,
    hidden_states: list[F64] | None = None,
) -> F64:
    """Logits ``(seq, vocab)`` (``(1, vocab)`` with ``last_only``) of a gemma3 GGUF.

    ``hidden_states``, when given, receives the scaled embeddings and each block's output.
    """
    cfg = Gemma3Config.from_model(model)
    lin = numerics.linear
    seq = len(token_ids)
    embd = model.tensor("token_embd.weight")
    x = embd[np.asarray(token_ids)].astype(np.float64) * np.sqrt(float(cfg.hidden))
    global_angles = rope_angles(
        seq, cfg.head_dim, cfg.rope_base, position_scale=cfg.global_position_scale
    )
    local_angles = rope_angles(seq, cfg.head_dim, SLIDING_ROPE_BASE)
    global_mask = causal_mask(seq)
    local_mask = causal_mask(seq, cfg.sliding_window)
    scale = 1.0 / np.sqrt(cfg.head_dim)
    if hidden_states is not None:
        hidden_states.append(x)
    for i in range(cfg.n_layers):
        p = f"blk.{i}."
        angles, mask = (
            (global_angles, global_mask) if cfg.is_global(i) else (local_angles, local_mask)
        )
        h = rms_norm(x, model.tensor(p + "attn_norm.weight"), cfg.eps)
        q = lin(model, h, p + "attn_q.weight").reshape(seq, cfg.n_head, -1)
        k = lin(model, h, p + "attn_k.weight").reshape(seq, cfg.n_kv, -1)
        v = lin(model, h, p + "attn_v.weight").reshape(seq, cfg.n_kv, -1)
        q = rms_norm(q, model.tensor(p + "attn_q_norm.weight"), cfg.eps)
        k = rms_norm(k, model.tensor(p + "attn_k_norm.weight"), cfg.eps)
        q = apply_rope(q, angles, "neox")
        k = apply_rope(k, angles, "neox")
        a = lin(model, attention(q, k, v, mask, scale), p + "attn_output.weight")
        x = x + rms_norm(a, model.tensor(p + "post_attention_norm.weight"), cfg.eps)
        h = rms_norm(x, model.tensor(p + "ffn_norm.weight"), cfg.eps)
        gate = lin(model, h, p + "ffn_gate.weight")
        up = lin(model, h, p + "ffn_up.weight")
        f = lin(model, numerics.gelu_tanh(gate) * up, p + "ffn_down.weight")
        x = x + rms_norm(f, model.tensor(p + "post_ffw_norm.weight"), cfg.eps)
        if hidden_states is not None:
            hidden_states.append(x)
    if last_only:
        x = x[-1:]
    x = rms_norm(x, model.tensor("output_norm.weight"), cfg.eps)
    head = "output.weight" if model.optional("output.weight") is not None else "token_embd.weight"
    logits = lin(model, x, head)
    if cfg.final_logit_softcapping is not None:
        cap = cfg.final_logit_softcapping
        logits = np.tanh(logits / cap) * cap
    return logits
