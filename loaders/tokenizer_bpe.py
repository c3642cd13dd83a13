"""GPT-2-style byte-level BPE ("gpt2") tokenizers rebuilt from GGUF vocabulary and merges.

Text is split by the pre-tokenizer regex that ``tokenizer.ggml.pre`` names (the table below
holds llama.cpp's expressions for the names it maps to them), mapped byte by byte to GPT-2's
printable alphabet, and merged by rank with the ``tokenizers`` BPE model — the construction
Hugging Face uses for Qwen2, Llama 3 and GPT-2 tokenizers.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import cache

import numpy as np
import numpy.typing as npt
from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers

from loaders.tokenizer_metadata import SPECIAL_TYPES, TokenType
from pullweights.errors import FormatError, UnsupportedError

__all__ = ["PRE_TOKENIZERS", "BpeBackend", "build_bpe_tokenizer", "byte_decoder", "parse_merges"]

_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_DEFAULT = (
    r"[\p{P}\$\+<=>\^~\|]+",
    _GPT2,
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
)

PRE_TOKENIZERS: dict[str, tuple[str, ...]] = {
    "default": _DEFAULT,
    "gpt-2": (_GPT2,),
    "gpt2": (_GPT2,),
    "llama3": (_LLAMA3,),
    "llama-v3": (_LLAMA3,),
    "llama-bpe": (_LLAMA3,),
    "qwen2": (_QWEN2,),
    "stablelm2": (_QWEN2,),
    "megrez": (_QWEN2,),
}
"""Pre-tokenizer regexes by ``tokenizer.ggml.pre`` name, applied in order as llama.cpp does."""

_IGNORE_MERGES = frozenset({"llama3", "llama-v3", "llama-bpe"})
"""Pre-tokenizers whose words found whole in the vocabulary skip merging (llama.cpp, HF)."""


def parse_merges(merges: Sequence[str]) -> list[tuple[str, str]]:
    """``"left right"`` strings from ``tokenizer.ggml.merges`` as pairs, in rank order."""
    pairs: list[tuple[str, str]] = []
    for rank, merge in enumerate(merges):
        left, sep, right = merge.partition(" ")
        if not sep or not left or not right:
            raise FormatError(f"tokenizer.ggml.merges[{rank}] = {merge!r} is not 'left right'")
        pairs.append((left, right))
    return pairs


def build_bpe_tokenizer(tokens: Sequence[str], merges: Sequence[str], *, pre: str) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` reproducing llama.cpp's byte-level BPE of plain text.

    Raises:
        UnsupportedError: ``pre`` names a pre-tokenizer not in :data:`PRE_TOKENIZERS`.
    """
    regexes = PRE_TOKENIZERS.get(pre)
    if regexes is None:
        known = ", ".join(sorted(PRE_TOKENIZERS))
        raise UnsupportedError(
            f"tokenizer.ggml.pre = {pre!r} is not a supported pre-tokenizer (known: {known})"
        )
    vocab = dict(zip(tokens, range(len(tokens)), strict=True))
    model = models.BPE(
        vocab=vocab,
        merges=parse_merges(merges),
        byte_fallback=False,
        fuse_unk=False,
        ignore_merges=pre in _IGNORE_MERGES,
    )
    tokenizer = Tokenizer(model)
    splits: list[pre_tokenizers.PreTokenizer] = [
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False) for regex in regexes
    ]
    splits.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(splits)
    return tokenizer


class BpeBackend:
    """Encodes text with a ``tokenizers`` BPE pipeline whose control, unknown and
    user-defined entries are added tokens at their own ids: control and unknown tokens are
    matched only when special tokens are parsed, user-defined ones always (as llama.cpp)."""

    def __init__(
        self, tokenizer: Tokenizer, tokens: Sequence[str], types: npt.NDArray[np.int32]
    ) -> None:
        self._tokenizer = tokenizer
        self._lock = threading.Lock()  # guards the encode_special_tokens switch
        ids = np.flatnonzero(np.isin(types, SPECIAL_TYPES)).tolist()
        user = TokenType.USER_DEFINED
        tokenizer.add_special_tokens(
            [AddedToken(tokens[i], special=True, normalized=False) for i in ids if types[i] != user]
        )
        tokenizer.add_tokens(
            [
                AddedToken(tokens[i], special=False, normalized=False)
                for i in ids
                if types[i] == user
            ]
        )
        for i in ids:
            if tokenizer.token_to_id(tokens[i]) != i:
                raise FormatError(f"special token {tokens[i]!r} (id {i}) could not keep its id")

    def encode(self, text: str, *, parse_special: bool) -> list[int]:
        """Token ids of ``text``."""
        with self._lock:
            self._tokenizer.encode_special_tokens = not parse_special
            ids: list[int] = self._tokenizer.encode(text, add_special_tokens=False).ids
        return ids

    def token_to_id(self, token: str) -> int | None:
        """The id of the vocabulary entry ``token``, or None."""
        found = self._tokenizer.token_to_id(token)
        return None if found is None else int(found)


@cache
def byte_decoder() -> dict[str, int]:
    """GPT-2's map from its printable stand-in characters back to byte values."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\xa1"), ord("\xac") + 1),
        *range(ord("\xae"), ord("\xff") + 1),
    ]
    chars = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in chars:
            chars[byte] = chr(256 + extra)
            extra += 1
    return {char: byte for byte, char in chars.items()}
