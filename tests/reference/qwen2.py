"""numpy reference forward pass of the ``qwen2`` architecture, straight from a GGUF file.

HF ``modeling_qwen2``: the llama decoder with float32 biases on Q/K/V (none on the
output projection) and NeoX RoPE (``rotate_half``: pairs ``(i, i + head_dim/2)``;
llama.cpp ``LLAMA_ROPE_TYPE_NEOX``) on Q/K as stored, since the converter does not permute
qwen2 weights. Qwen2's optional sliding window is off in the released models and in
llama.cpp, so attention is plain causal.
"""

from __future__ import annotations

from collections.abc import Sequence

from .common import F64
from .gguf_model import GGUFModel
from .llama import decoder_forward
from .numerics import EXACT, Numerics


def forward(
    model: GGUFModel,
    token_ids: Sequence[int],
    *,
    numerics: Numerics = EXACT,
    last_only: bool = False,
    hidden_states: list[F64] | None = None,
) -> F64:
    """Logits of a ``qwen2`` GGUF: the llama block with QKV biases and NeoX RoPE."""
    if model.optional("blk.0.attn_q.bias") is None:
        raise KeyError(f"{model.path}: qwen2 file without blk.0.attn_q.bias")
    return decoder_forward(
        model,
        token_ids,
        "neox",
        numerics=numerics,
        last_only=last_only,
        hidden_states=hidden_states,
    )
