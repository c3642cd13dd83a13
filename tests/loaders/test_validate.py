"""Metadata the loaders trust: every hyper-parameter range-checked and held against the
tensor shapes it describes before anything is sized from it; tokenizer data that
``tokenizers`` refuses is a FormatError too."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from loaders import load_model
from pullweights import create_context
from pullweights.errors import FormatError, GraphError, PullWeightsError, UnsupportedError
from pullweights.gguf import open_gguf
from tests.reference import write_tiny_model

TRUNCATE = object()  # drop the last five entries of an array
NAN = object()  # replace every entry of a float array by NaN

# (architecture, metadata overrides, error, message fragment)
CASES: dict[str, tuple[str, dict[str, Any], type[PullWeightsError], str]] = {
    "gemma3 block_count 2**31 (built a 2.5 GB set)": (
        "gemma3",
        {"gemma3.block_count": 2**31},
        FormatError,
        r"block_count = 2147483648: expected an int in \[1, 4096\]",
    ),
    "block_count beyond the tensors": (
        "gemma3",
        {"gemma3.block_count": 7},
        FormatError,
        "no tensors of block 6",
    ),
    "block_count below the tensors (silently dropped layers)": (
        "gemma3",
        {"gemma3.block_count": 3},
        FormatError,
        "'blk.3.attn_norm.weight' belongs to block 3, but gemma3.block_count is 3",
    ),
    "head_count 2**63": (
        "gemma3",
        {"gemma3.attention.head_count": 2**63},
        FormatError,
        "head_count = 9223372036854775808",
    ),
    "head_count_kv 2**63": (
        "gemma3",
        {"gemma3.attention.head_count_kv": 2**63},
        FormatError,
        "head_count_kv = 9223372036854775808",
    ),
    "sliding_window 2**64-1": (
        "gemma3",
        {"gemma3.attention.sliding_window": 2**64 - 1},
        FormatError,
        "sliding_window = 18446744073709551615",
    ),
    "linear rope factor 0": (
        "llama",
        {"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 0.0},
        FormatError,
        "rope.scaling.factor = 0.0: expected a finite number > 0",
    ),
    "linear rope factor NaN": (
        "llama",
        {"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": float("nan")},
        FormatError,
        "rope.scaling.factor = nan",
    ),
    "key_length 2**31-1 (an 8 GiB RoPE table)": (
        "qwen2",
        {"qwen2.attention.key_length": 2**31 - 1},
        FormatError,
        "key_length = 2147483647",
    ),
    "key_length not matching attn_q": (
        "qwen2",
        {"qwen2.attention.key_length": 32},
        FormatError,
        r"'blk.0.attn_q.weight' has shape \[64, 64\], but the metadata implies \[128, 64\]",
    ),
    "rope base 0": ("qwen2", {"qwen2.rope.freq_base": 0.0}, FormatError, "freq_base = 0.0"),
    "rope base inf": ("qwen2", {"qwen2.rope.freq_base": float("inf")}, FormatError, "inf"),
    "rms epsilon NaN": (
        "qwen2",
        {"qwen2.attention.layer_norm_rms_epsilon": float("nan")},
        FormatError,
        "layer_norm_rms_epsilon = nan",
    ),
    "rms epsilon negative": (
        "qwen2",
        {"qwen2.attention.layer_norm_rms_epsilon": -1.0},
        FormatError,
        "layer_norm_rms_epsilon = -1.0",
    ),
    "context length 2**40": (
        "qwen2",
        {"qwen2.context_length": 2**40},
        FormatError,
        "context_length = 1099511627776",
    ),
    "head_count not a multiple of head_count_kv": (
        "qwen2",
        {"qwen2.attention.head_count_kv": 3},
        FormatError,
        "not a multiple of qwen2.attention.head_count_kv = 3",
    ),
    "embedding_length not matching token_embd": (
        "qwen2",
        {"qwen2.embedding_length": 128},
        FormatError,
        "'token_embd.weight' has shape",
    ),
    "feed_forward_length not matching ffn_gate": (
        "qwen2",
        {"qwen2.feed_forward_length": 256},
        FormatError,
        "'blk.0.ffn_gate.weight' has shape",
    ),
    "head_count not matching attn_k": (
        "qwen2",
        {"qwen2.attention.head_count": 8},
        FormatError,
        "'blk.0.attn_k.weight' has shape",
    ),
    "softcap NaN": (
        "qwen2",
        {"qwen2.final_logit_softcapping": float("nan")},
        FormatError,
        "final_logit_softcapping = nan",
    ),
    "head_count a string": (
        "qwen2",
        {"qwen2.attention.head_count": "4"},
        FormatError,
        "head_count = '4'",
    ),
    "merges naming unknown tokens": (
        "qwen2",
        {"tokenizer.ggml.merges": ["zzzq yyyq"]},
        FormatError,
        "cannot build a tokenizer: .*zzzq",
    ),
    "vocabulary shorter than token_embd": (
        "qwen2",
        {"tokenizer.ggml.tokens": TRUNCATE},
        FormatError,
        "has 374 entries, but token_embd.weight has 379 rows",
    ),
    "unknown token outside the vocabulary": (
        "gemma3",
        {"tokenizer.ggml.unknown_token_id": 10**6},
        None,  # type: ignore[dict-item]  # ignored as llama.cpp does: loads
        "",
    ),
    "scores NaN": ("gemma3", {"tokenizer.ggml.scores": NAN}, None, ""),  # type: ignore[dict-item]
    "partial rotary": (
        "llama",
        {"llama.rope.dimension_count": 8},
        UnsupportedError,
        "partial rotary",
    ),
}


@pytest.fixture(scope="module")
def tiny_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("validate")
    return {
        arch: write_tiny_model(root / f"{arch}.gguf", arch) for arch in ("gemma3", "qwen2", "llama")
    }  # type: ignore[arg-type]


async def _load(path: Path, overrides: dict[str, Any], **kwargs: Any) -> object:
    gguf = await open_gguf(path)
    async with gguf:
        for key, value in overrides.items():
            if value is TRUNCATE:
                gguf.metadata[key] = list(gguf.metadata[key])[:-5]  # type: ignore[call-overload]
            elif value is NAN:
                gguf.metadata[key] = np.full(len(gguf.metadata[key]), np.nan, np.float32)  # type: ignore[arg-type]
            else:
                gguf.metadata[key] = value
        return await load_model(gguf, context=create_context(cache_dir=None), **kwargs)


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_metadata(case: str, tiny_paths: dict[str, Path]) -> None:
    arch, overrides, error, fragment = CASES[case]
    if error is None:
        assert asyncio.run(_load(tiny_paths[arch], overrides)) is not None
        return
    with pytest.raises(error, match=fragment):
        asyncio.run(_load(tiny_paths[arch], overrides))


def test_state_larger_than_memory_is_refused_before_allocating(tiny_paths: dict[str, Path]) -> None:
    long = {"qwen2.context_length": 2**31 - 1}
    expected = r"KV caches \(1 slots\) and RoPE tables .* one allocation may take"
    with pytest.raises(GraphError, match=expected):
        asyncio.run(_load(tiny_paths["qwen2"], long, context_length=2**31 - 1))
