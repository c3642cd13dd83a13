"""Tiny GGUF-style tokenizer metadata for the loader tests, and a direct SPM reference.

``spm_metadata`` is a small "llama" (SentencePiece-style) vocabulary: control tokens, three
user-defined tokens, the 256 byte-fallback tokens and scored pieces (every character of a
piece is itself a piece). ``bpe_metadata`` is a small "gpt2" byte-level BPE vocabulary.
``reference_spm`` is llama.cpp's SPM algorithm written out plainly, to compare with.
"""

from __future__ import annotations

import re

import numpy as np
from tokenizers import pre_tokenizers

from loaders.tokenizer import TokenType

CONTROL = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
USER_DEFINED = ["\n", "\n\n", "  "]
BYTES = [f"<0x{b:02X}>" for b in range(256)]
# Normal pieces, best first. Every character of a piece is itself a piece.
PIECES = [
    "▁", "e", "l", "o", "h", "w", "r", "d", "a", "b", "c", "é",
    "ll", "▁h", "he", "el", "lo", "wo", "or", "▁w", "ab", "bc", "cd", "▁a",
    "hell", "hello", "▁hello", "wor", "world", "▁world", "abc", "bcd", "▁▁", "▁▁▁",
    "dé", "▁abc", "ld", "▁wor",
]  # fmt: skip
ALPHABET = "elohwrdabcé €日 \n"


def spm_metadata(**overrides: object) -> dict[str, object]:
    """Metadata of a small "llama" vocabulary; ``overrides`` replace ``tokenizer.ggml.*`` keys."""
    tokens = CONTROL + USER_DEFINED + BYTES + PIECES
    types = (
        [TokenType.CONTROL] * len(CONTROL)
        + [TokenType.USER_DEFINED] * len(USER_DEFINED)
        + [TokenType.BYTE] * len(BYTES)
        + [TokenType.NORMAL] * len(PIECES)
    )
    scores = [0.0] * (len(CONTROL) + len(USER_DEFINED) + len(BYTES)) + [
        -float(i) for i in range(len(PIECES))
    ]
    meta: dict[str, object] = {
        "general.architecture": "gemma3",
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": np.array(scores, dtype=np.float32),
        "tokenizer.ggml.token_type": np.array(types, dtype=np.int32),
        "tokenizer.ggml.bos_token_id": 2,
        "tokenizer.ggml.eos_token_id": 1,
        "tokenizer.ggml.unknown_token_id": 3,
        "tokenizer.ggml.padding_token_id": 0,
        "tokenizer.ggml.add_space_prefix": False,
    }
    for key, value in overrides.items():
        full = f"tokenizer.ggml.{key}"
        if value is None:
            meta.pop(full, None)
        else:
            meta[full] = value
    return meta


def reference_spm(text: str, meta: dict[str, object], *, space_prefix: bool = False) -> list[int]:
    """llama.cpp's SPM tokenizer written out directly (quadratic; fine for short text).

    User-defined tokens are cut out of the raw text first (longest first); every other
    fragment gets spaces escaped (and a "▁" prefix) and goes through the merge loop.
    """
    tokens = meta["tokenizer.ggml.tokens"]
    assert isinstance(tokens, list)
    ids = {t: i for i, t in enumerate(tokens)}
    by_length = sorted(USER_DEFINED, key=len, reverse=True)
    out: list[int] = []
    for fragment in re.split("(" + "|".join(map(re.escape, by_length)) + ")", text):
        if fragment in USER_DEFINED:
            out.append(ids[fragment])
        elif fragment:
            escaped = ("▁" if space_prefix else "") + fragment.replace(" ", "▁")
            out.extend(_reference_merges(escaped, meta))
    return out


def _reference_merges(text: str, meta: dict[str, object]) -> list[int]:
    tokens = meta["tokenizer.ggml.tokens"]
    scores = meta["tokenizer.ggml.scores"]
    assert isinstance(tokens, list) and isinstance(scores, np.ndarray)
    ids = {t: i for i, t in enumerate(tokens)}
    symbols = list(text)
    while True:
        best: tuple[float, int] | None = None
        for i in range(len(symbols) - 1):
            merged = symbols[i] + symbols[i + 1]
            if merged in ids and (best is None or scores[ids[merged]] > best[0]):
                best = (float(scores[ids[merged]]), i)
        if best is None:
            break
        i = best[1]
        symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
    out: list[int] = []
    for symbol in symbols:
        if symbol in ids:
            out.append(ids[symbol])
        else:
            out.extend(ids[f"<0x{b:02X}>"] for b in symbol.encode())
    return out


BYTE_CHARS = sorted(pre_tokenizers.ByteLevel.alphabet())
MERGES = ["h e", "l l", "l d", "o r", "Ġ w", "he ll", "hell o", "Ġw or", "Ġwor ld", "1 2"]
BPE_PIECES = ["he", "ll", "ld", "or", "Ġw", "hell", "hello", "Ġwor", "Ġworld", "12"]
BPE_CONTROL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def bpe_metadata(pre: str = "qwen2", **overrides: object) -> dict[str, object]:
    tokens = BYTE_CHARS + BPE_PIECES + BPE_CONTROL + ["<tool_call>"]
    types = (
        [TokenType.NORMAL] * (len(BYTE_CHARS) + len(BPE_PIECES))
        + [TokenType.CONTROL] * len(BPE_CONTROL)
        + [TokenType.USER_DEFINED]
    )
    eot = tokens.index("<|endoftext|>")
    meta: dict[str, object] = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": MERGES,
        "tokenizer.ggml.bos_token_id": eot,
        "tokenizer.ggml.eos_token_id": tokens.index("<|im_end|>"),
        "tokenizer.ggml.padding_token_id": eot,
    }
    meta.update({f"tokenizer.ggml.{k}": v for k, v in overrides.items()})
    return meta
