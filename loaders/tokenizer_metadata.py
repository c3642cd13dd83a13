"""Reading the ``tokenizer.ggml.*`` keys of GGUF metadata: typed values, token types, and the
end-of-generation ids llama.cpp derives from them.

Every accessor raises :class:`~pullweights.errors.FormatError` naming the key when a value
has the wrong type or length.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from pullweights.errors import FormatError

__all__ = [
    "EOG_TOKEN_TEXTS",
    "PREFIX",
    "SPECIAL_TYPES",
    "TokenType",
    "eog_ids",
    "get_bool",
    "get_float_array",
    "get_id",
    "get_int_array",
    "get_str",
    "get_str_list",
    "get_tokens",
]

PREFIX = "tokenizer.ggml."
"""Prefix of the tokenizer keys; accessors take the name after it."""


class TokenType(IntEnum):
    """``tokenizer.ggml.token_type`` values (llama.cpp's ``llama_token_type``)."""

    UNDEFINED = 0
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


SPECIAL_TYPES = (TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.UNKNOWN)
"""Entries matched as whole added tokens, not tokenized from their text (control and
unknown ones only where special tokens are parsed, user-defined ones always)."""


EOG_TOKEN_TEXTS = frozenset(
    {
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<|return|>",
        "<|call|>",
        "<|flush|>",
        "<|calls|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "<|eom_id|>",
        "<EOT>",
        "_<EOT>",
        "[EOT]",
        "[EOS]",
        "<|end_of_text|>",
        "<end_of_utterance>",
        "<\uff5cend\u2581of\u2581sentence\uff5c>",  # DeepSeek
    }
)
"""Token texts that end generation wherever they appear in a vocabulary, as in llama.cpp.

llama.cpp's list also has ``"</s>"`` (for PaddleOCR); it is left out here on purpose: in
Gemma's vocabulary it is the HTML strikethrough end tag and in Qwen's plain text, so stopping
on it would cut off generated HTML. A model whose EOS is ``"</s>"`` names it in
``tokenizer.ggml.eos_token_id`` anyway.
"""

_EOG_ID_KEYS = (
    "eos_token_id",
    "eot_token_id",
    "eom_token_id",
    "fim_pad_token_id",
    "fim_rep_token_id",
    "fim_sep_token_id",
)
_FIM_TEXTS = {
    "fim_pad_token_id": ("<|fim_pad|>", "<fim-pad>", "<PAD>"),
    "fim_rep_token_id": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>"),
    "fim_sep_token_id": ("<|file_sep|>",),
}


def _key(name: str) -> str:
    return PREFIX + name


def get_str(meta: Mapping[str, object], name: str, default: str | None = None) -> str:
    """The string ``tokenizer.ggml.<name>`` (``default`` when absent)."""
    value = meta.get(_key(name), default)
    if isinstance(value, bytes):
        value = value.decode()
    if not isinstance(value, str):
        raise FormatError(f"{_key(name)} must be a string, got {type(value).__name__}")
    return value


def get_str_list(meta: Mapping[str, object], name: str) -> list[str]:
    """The string array ``tokenizer.ggml.<name>`` as a new list."""
    value = meta.get(_key(name))
    if not isinstance(value, (list, tuple)):
        raise FormatError(f"{_key(name)} must be a list of strings, got {type(value).__name__}")
    if set(map(type, value)) <= {str}:  # the usual case, checked without a Python-level loop
        return list(value)
    items = [v.decode() if isinstance(v, bytes) else v for v in value]
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise FormatError(f"{_key(name)}[{index}] must be a string, got {type(item).__name__}")
    return items


def get_tokens(meta: Mapping[str, object]) -> list[str]:
    """``tokenizer.ggml.tokens``: non-empty, every entry distinct."""
    tokens = get_str_list(meta, "tokens")
    if not tokens:
        raise FormatError(f"{_key('tokens')} is empty")
    if len(set(tokens)) != len(tokens):
        raise FormatError(f"{_key('tokens')} holds the same entry twice")
    return tokens


def _get_array(
    meta: Mapping[str, object], name: str, n_vocab: int
) -> npt.NDArray[np.generic] | None:
    value = meta.get(_key(name))
    if value is None:
        return None
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise FormatError(f"{_key(name)} is not a numeric array") from exc
    if array.shape != (n_vocab,):
        raise FormatError(
            f"{_key(name)} has shape {array.shape}, expected ({n_vocab},) like tokens"
        )
    return array


def get_float_array(
    meta: Mapping[str, object], name: str, n_vocab: int
) -> npt.NDArray[np.float32] | None:
    """``tokenizer.ggml.<name>`` as float32, one value per token; ``None`` when absent."""
    array = _get_array(meta, name, n_vocab)
    if array is None:
        return None
    if not np.issubdtype(array.dtype, np.number):
        raise FormatError(f"{_key(name)} must be numbers, got {array.dtype}")
    return array.astype(np.float32, copy=False)


def get_int_array(
    meta: Mapping[str, object], name: str, n_vocab: int
) -> npt.NDArray[np.int32] | None:
    """``tokenizer.ggml.<name>`` as int32, one value per token; ``None`` when absent."""
    array = _get_array(meta, name, n_vocab)
    if array is None:
        return None
    if not np.issubdtype(array.dtype, np.integer):
        raise FormatError(f"{_key(name)} must be integers, got {array.dtype}")
    return array.astype(np.int32, copy=False)


def get_bool(meta: Mapping[str, object], name: str, *, default: bool) -> bool:
    """The boolean ``tokenizer.ggml.<name>`` (``default`` when absent)."""
    value = meta.get(_key(name), default)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    raise FormatError(f"{_key(name)} must be a boolean, got {value!r}")


def get_id(meta: Mapping[str, object], name: str, n_vocab: int) -> int | None:
    """The token id ``tokenizer.ggml.<name>``; ``None`` when absent or outside the vocabulary."""
    value = meta.get(_key(name))
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise FormatError(f"{_key(name)} must be an integer, got {value!r}")
    if not 0 <= value < n_vocab:
        # llama.cpp ignores out-of-range special ids with a warning; so do we.
        return None
    return int(value)


def eog_ids(meta: Mapping[str, object], tokens: Sequence[str]) -> tuple[frozenset[int], list[int]]:
    """End-of-generation ids (the metadata's EOS/EOT/EOM/FIM ids and well-known texts).

    Returns the ids, and those of them that were recognised by their text.
    """
    n_vocab = len(tokens)
    fim_texts = {text: name for name, texts in _FIM_TEXTS.items() for text in texts}
    wanted = EOG_TOKEN_TEXTS | fim_texts.keys()
    found = {token: tokens.index(token) for token in wanted.intersection(tokens)}
    by_text = [i for token, i in found.items() if token in EOG_TOKEN_TEXTS]
    eog = set(by_text)
    for name in _EOG_ID_KEYS:
        token_id = get_id(meta, name, n_vocab)
        if token_id is None and name in _FIM_TEXTS:
            # llama.cpp recognises FIM tokens by their text when the metadata has no id.
            token_id = next((found[t] for t in _FIM_TEXTS[name] if t in found), None)
            if token_id is not None:
                by_text.append(token_id)
        if token_id is not None:
            eog.add(token_id)
    return frozenset(eog), sorted(set(by_text))
