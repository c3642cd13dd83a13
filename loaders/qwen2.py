"""Qwen2 decoders: the llama block with Q/K/V biases and NeoX RoPE.

The converter does not permute qwen2's Q/K rows, so RoPE rotates pairs
``(i, i + head_dim / 2)``. The released models use no sliding window (llama.cpp ignores
the HF ``use_sliding_window`` flag, which is off), have a separate ``output.weight`` and
do not add BOS.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from loaders.blocks import Architecture
from loaders.config import ModelConfig
from loaders.llama import pre_norm_decoder

__all__ = ["QWEN2"]


def config(metadata: Mapping[str, object], vocab_size: int) -> ModelConfig:
    """qwen2 hyper-parameters from the metadata; NeoX RoPE, no sliding window."""
    base = ModelConfig.from_metadata(metadata, vocab_size=vocab_size)
    return replace(base, sliding_window=None, sliding_layers=frozenset())


QWEN2 = Architecture("qwen2", config, pre_norm_decoder)
