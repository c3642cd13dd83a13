"""Hyper-parameters checked against the tensors they describe, before anything is built.

A GGUF file states its shapes twice: in the metadata (``block_count``, ``head_count``,
``key_length``...) and in the tensors' own shapes. The loaders size attention, RoPE tables
and KV caches from the metadata, so a file whose two accounts disagree must be refused up
front, naming both — not run with layers left out, nor found out by an allocation of
gigabytes or by onnxruntime. :func:`check_tensors` holds every shape a decoder block can
use (:mod:`loaders.blocks`) against the config: present tensors must have exactly the
shape the config implies, the ``blk.N`` indices must be exactly ``0 .. block_count - 1``,
and the vocabulary must have one entry per embedding row.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from loaders.config import ModelConfig
from pullweights.errors import FormatError
from pullweights.gguf.reader import GGUFTensor

__all__ = ["block_shapes", "check_tensors", "model_shapes"]

_BLOCK = re.compile(r"blk\.(\d+)\.(.+)")


def block_shapes(c: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The shape (numpy order, ``(out, in)`` for matrices) of every tensor a decoder block
    may have, by name within the block."""
    return {
        "attn_norm.weight": (c.hidden,),
        "attn_q.weight": (c.q_dim, c.hidden),
        "attn_k.weight": (c.kv_dim, c.hidden),
        "attn_v.weight": (c.kv_dim, c.hidden),
        "attn_q.bias": (c.q_dim,),
        "attn_k.bias": (c.kv_dim,),
        "attn_v.bias": (c.kv_dim,),
        "attn_q_norm.weight": (c.head_dim,),
        "attn_k_norm.weight": (c.head_dim,),
        "attn_output.weight": (c.hidden, c.q_dim),
        "attn_output.bias": (c.hidden,),
        "post_attention_norm.weight": (c.hidden,),
        "ffn_norm.weight": (c.hidden,),
        "ffn_gate.weight": (c.ffn, c.hidden),
        "ffn_up.weight": (c.ffn, c.hidden),
        "ffn_down.weight": (c.hidden, c.ffn),
        "post_ffw_norm.weight": (c.hidden,),
    }


def model_shapes(c: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of the tensors outside the blocks."""
    return {
        "token_embd.weight": (c.vocab_size, c.hidden),
        "output.weight": (c.vocab_size, c.hidden),
        "output_norm.weight": (c.hidden,),
        "rope_freqs.weight": (c.head_dim // 2,),
    }


def check_tensors(
    config: ModelConfig, tensors: Mapping[str, GGUFTensor], metadata: Mapping[str, object]
) -> None:
    """Refuse a file whose tensors do not have the shapes ``config`` implies.

    Raises:
        FormatError: naming the tensor, its shape, the expected shape and the metadata
            keys it follows from; or blocks missing or beyond ``block_count``; or a
            vocabulary whose size is not the embedding's row count.
    """
    arch = config.arch
    per_block = block_shapes(config)
    outside = model_shapes(config)
    seen_blocks: set[int] = set()
    for name, tensor in tensors.items():
        match = _BLOCK.fullmatch(name)
        if match is not None:
            index, part = int(match.group(1)), match.group(2)
            if index >= config.n_layers:
                raise FormatError(
                    f"tensor {name!r} belongs to block {index}, but {arch}.block_count is "
                    f"{config.n_layers}"
                )
            seen_blocks.add(index)
            expected = per_block.get(part)
        else:
            expected = outside.get(name)
        if expected is not None and tuple(tensor.shape) != expected:
            raise FormatError(
                f"tensor {name!r} has shape {list(tensor.shape)}, but the metadata implies "
                f"{list(expected)} ({_explain(config)})"
            )
    missing = sorted(set(range(config.n_layers)) - seen_blocks)
    if missing:
        raise FormatError(
            f"{arch}.block_count is {config.n_layers}, but the file has no tensors of block "
            f"{missing[0]}" + (f" (nor of {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    tokens = metadata.get("tokenizer.ggml.tokens")
    if isinstance(tokens, (list, tuple)) and len(tokens) != config.vocab_size:
        raise FormatError(
            f"tokenizer.ggml.tokens has {len(tokens)} entries, but token_embd.weight has "
            f"{config.vocab_size} rows: every token id needs both"
        )


def _explain(c: ModelConfig) -> str:
    a = c.arch
    return (
        f"{a}.embedding_length={c.hidden}, {a}.attention.head_count={c.n_heads}, "
        f"head_count_kv={c.n_kv_heads}, key_length={c.head_dim}, "
        f"{a}.feed_forward_length={c.ffn}, vocabulary {c.vocab_size}"
    )
