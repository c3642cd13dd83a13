"""Tokenizers built from GGUF metadata, matching llama.cpp token for token.

:class:`Tokenizer` reads the ``tokenizer.ggml.*`` keys of a GGUF file and builds a
backend for the vocabulary type it names: ``"llama"`` (SentencePiece-style, encoded by the
``sentencepiece`` library, see :mod:`loaders.tokenizer_spm`) or ``"gpt2"`` (byte-level BPE,
encoded by ``tokenizers``, see :mod:`loaders.tokenizer_bpe`). A control token written in a
prompt (``"<start_of_turn>"``) encodes as its one id when special tokens are parsed;
user-defined tokens (Gemma's runs of spaces and newlines, Qwen's ``<tool_call>``) are always
matched first, as llama.cpp does. Decoding maps every id to its bytes (byte-fallback
tokens are single bytes, byte-level BPE characters are mapped back to bytes) and decodes
UTF-8 at the end, so
:class:`StreamDecoder` can print text as it is generated without splitting a character.

Example::

    tokenizer = Tokenizer.from_gguf_metadata(gguf.metadata)
    ids = tokenizer.encode("<start_of_turn>user\\nHello<end_of_turn>")
    text = tokenizer.decode(ids)
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from loaders.tokenizer_bpe import BpeBackend, build_bpe_tokenizer, byte_decoder
from loaders.tokenizer_metadata import (
    EOG_TOKEN_TEXTS,
    PREFIX,
    SPECIAL_TYPES,
    TokenType,
    eog_ids,
    get_bool,
    get_float_array,
    get_id,
    get_int_array,
    get_str,
    get_str_list,
    get_tokens,
)
from loaders.tokenizer_spm import SPACE_MARK, load_spm_backend
from pullweights.errors import ComputeError, FormatError, UnsupportedError
from pullweights.runtime.heap import release_free_memory

__all__ = ["EOG_TOKEN_TEXTS", "MAX_ENCODE_CHARS", "StreamDecoder", "TokenType", "Tokenizer"]

#: Longest text :meth:`Tokenizer.encode` takes by default: ``tokenizers`` needs ~90 bytes
#: of working memory per character (10 M characters: ~850 MB, ~9 s).
MAX_ENCODE_CHARS = 1 << 22

_SKIPPED_TYPES = (TokenType.CONTROL, TokenType.UNKNOWN)


class Backend(Protocol):
    """What a vocabulary type's encoder provides (:mod:`loaders.tokenizer_spm`,
    :mod:`loaders.tokenizer_bpe`); thread-safe."""

    def encode(self, text: str, *, parse_special: bool) -> list[int]: ...

    def token_to_id(self, token: str) -> int | None: ...


class Tokenizer:
    """Text to token ids and back, for the vocabulary of one GGUF model.

    Build one with :meth:`from_gguf_metadata`. Instances are safe to share between threads.

    Attributes:
        kind: ``"llama"`` or ``"gpt2"`` (``tokenizer.ggml.model``).
        bos_id, eos_id, pad_id, unk_id: the special ids the metadata names (``None`` if absent).
        add_bos, add_eos: whether :meth:`encode` adds BOS / EOS when ``add_special`` is true.
        add_space_prefix: whether every text fragment gets a leading "▁" (SentencePiece).
        eog_ids: every id that ends generation (EOS, EOT, ``<end_of_turn>``, ``<|im_end|>``...).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        kind: str,
        tokens: Sequence[str],
        token_types: npt.NDArray[np.int32],
        bos_id: int | None,
        eos_id: int | None,
        pad_id: int | None,
        unk_id: int | None,
        add_bos: bool,
        add_eos: bool,
        add_space_prefix: bool,
        eog_ids: frozenset[int],
    ) -> None:
        """Wrap an already configured backend; use :meth:`from_gguf_metadata` instead."""
        self._backend = backend
        self.kind = kind
        self._tokens = tokens
        self._types = token_types
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.pad_id = pad_id
        self.unk_id = unk_id
        self.add_bos = add_bos
        self.add_eos = add_eos
        self.add_space_prefix = add_space_prefix
        self.eog_ids = eog_ids
        self._pieces: dict[int, bytes] = {}
        self._max_token_chars: int | None = None
        self._byte_decoder = byte_decoder() if kind == "gpt2" else {}

    # ------------------------------------------------------------------ building

    @classmethod
    def from_gguf_metadata(
        cls, meta: Mapping[str, object], *, cache_dir: str | Path | None = None
    ) -> Tokenizer:
        """Build the tokenizer a GGUF file describes.

        Args:
            meta: the GGUF key/value metadata (``tokenizer.ggml.tokens``, ``.scores``,
                ``.token_type``, ``.merges``, ``.pre``, special ids and flags...). Arrays may be
                lists or numpy arrays.
            cache_dir: a weight cache directory to keep (and find) the compiled
                SentencePiece model of a ``"llama"`` vocabulary in.

        Returns:
            The tokenizer, ready to use (Gemma 3's 262,144-entry vocabulary: ~0.8 s the
            first time, ~0.1 s once its model is in the cache).

        Raises:
            FormatError: a required key is missing or has the wrong type or length.
            UnsupportedError: the vocabulary type or pre-tokenizer is not handled.
        """
        kind = get_str(meta, "model")
        tokens = get_tokens(meta)
        n_vocab = len(tokens)
        types = get_int_array(meta, "token_type", n_vocab)
        if types is None:
            types = np.full(n_vocab, TokenType.NORMAL, dtype=np.int32)

        eog, eog_by_text = eog_ids(meta, tokens)
        if eog_by_text:
            # llama.cpp makes end-of-generation tokens found by their text control tokens.
            types = types.copy()
            types[eog_by_text] = TokenType.CONTROL
        backend: Backend
        if kind == "llama":
            scores = get_float_array(meta, "scores", n_vocab)
            if scores is None:
                raise FormatError(f"{PREFIX}scores is required for a 'llama' vocabulary")
            add_space_prefix = get_bool(meta, "add_space_prefix", default=True)
            backend = _translated(
                load_spm_backend,
                tokens,
                scores,
                types,
                add_space_prefix=add_space_prefix,
                cache_dir=None if cache_dir is None else Path(cache_dir),
            )
            add_bos_default = True
        elif kind == "gpt2":
            merges = get_str_list(meta, "merges")
            pre = get_str(meta, "pre", default="default")
            backend = _translated(
                lambda: BpeBackend(build_bpe_tokenizer(tokens, merges, pre=pre), tokens, types)
            )
            add_space_prefix = False
            add_bos_default = pre in ("llama3", "llama-v3", "llama-bpe")
        else:
            raise UnsupportedError(
                f"{PREFIX}model = {kind!r} is not a supported vocabulary type "
                "(supported: 'llama', 'gpt2')"
            )
        bos_id = get_id(meta, "bos_token_id", n_vocab)
        eos_id = get_id(meta, "eos_token_id", n_vocab)
        add_bos = get_bool(meta, "add_bos_token", default=add_bos_default)
        add_eos = get_bool(meta, "add_eos_token", default=False)
        if add_bos and bos_id is None:
            raise FormatError(f"{PREFIX}add_bos_token is set but bos_token_id is missing")
        if add_eos and eos_id is None:
            raise FormatError(f"{PREFIX}add_eos_token is set but eos_token_id is missing")
        release_free_memory()  # what building left freed on the C heap
        return cls(
            backend,
            kind=kind,
            tokens=tokens,
            token_types=types,
            bos_id=bos_id,
            eos_id=eos_id,
            pad_id=get_id(meta, "padding_token_id", n_vocab),
            unk_id=get_id(meta, "unknown_token_id", n_vocab),
            add_bos=add_bos,
            add_eos=add_eos,
            add_space_prefix=add_space_prefix,
            eog_ids=eog,
        )

    # ------------------------------------------------------------------ vocabulary

    @property
    def vocab_size(self) -> int:
        """Number of entries in the vocabulary (ids are ``0 .. vocab_size - 1``)."""
        return len(self._tokens)

    @property
    def max_token_chars(self) -> int:
        """Characters of the longest vocabulary entry: no token stands for more text."""
        if self._max_token_chars is None:
            self._max_token_chars = max(map(len, self._tokens))
        return self._max_token_chars

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids of control and unknown tokens: dropped by ``decode(skip_special=True)``."""
        return frozenset(np.flatnonzero(np.isin(self._types, _SKIPPED_TYPES)).tolist())

    def is_eog(self, token_id: int) -> bool:
        """Whether ``token_id`` ends generation."""
        return token_id in self.eog_ids

    def id_to_token(self, token_id: int) -> str:
        """The vocabulary entry of ``token_id`` as stored in the GGUF file."""
        self._check_id(token_id)
        return self._tokens[token_id]

    def token_to_id(self, token: str) -> int | None:
        """The id of the vocabulary entry ``token``, or ``None`` if there is none."""
        return self._backend.token_to_id(token)

    def token_type(self, token_id: int) -> TokenType:
        """The :class:`TokenType` of ``token_id``."""
        self._check_id(token_id)
        value = int(self._types[token_id])
        return TokenType(value) if value in TokenType._value2member_map_ else TokenType.UNDEFINED

    # ------------------------------------------------------------------ encoding

    def encode(
        self,
        text: str,
        *,
        add_special: bool = True,
        parse_special: bool = True,
        max_chars: int = MAX_ENCODE_CHARS,
    ) -> list[int]:
        """Token ids of ``text``.

        Args:
            text: the text to tokenize.
            add_special: add BOS / EOS as the metadata asks (``add_bos``, ``add_eos``).
            parse_special: encode control tokens written in ``text`` (``"<start_of_turn>"``)
                as their ids; when false they are tokenized as plain text. User-defined tokens
                are matched either way, as llama.cpp does.
            max_chars: longest text accepted (``tokenizers`` holds ~90 bytes per character
                while it works).

        Raises:
            ComputeError: ``text`` is not a string or is longer than ``max_chars``.
        """
        if not isinstance(text, str):
            raise ComputeError(f"encode: text must be a string, got {type(text).__name__}")
        if len(text) > max_chars:
            raise ComputeError(
                f"encode: the text has {len(text)} characters, more than the {max_chars} accepted"
            )
        try:
            ids = self._backend.encode(text, parse_special=parse_special)
        except Exception as exc:  # tokenizers and sentencepiece raise plain Exceptions
            raise ComputeError(f"encode: the tokenizer failed: {exc}") from exc
        if add_special:
            if self.add_bos and self.bos_id is not None:
                ids.insert(0, self.bos_id)
            if self.add_eos and self.eos_id is not None:
                ids.append(self.eos_id)
        return ids

    # ------------------------------------------------------------------ decoding

    def token_bytes(self, token_id: int, *, skip_special: bool = True) -> bytes:
        """The bytes ``token_id`` stands for (empty for skipped special and unused tokens)."""
        self._check_id(token_id)
        if skip_special and self._types[token_id] in _SKIPPED_TYPES:
            return b""
        piece = self._pieces.get(token_id)
        if piece is None:
            piece = self._piece(token_id)
            self._pieces[token_id] = piece
        return piece

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        """The text of ``ids``.

        Args:
            ids: token ids.
            skip_special: leave out control and unknown tokens (BOS, ``<end_of_turn>``...).

        Invalid UTF-8 (a byte-fallback sequence cut short) decodes to U+FFFD. With
        ``add_space_prefix`` the "▁" the encoder put in front of the text is removed again.
        """
        ids = list(ids)
        data = b"".join(self.token_bytes(i, skip_special=skip_special) for i in ids)
        text = data.decode("utf-8", errors="replace")
        if self.add_space_prefix and text.startswith(" ") and self._starts_text(ids):
            text = text[1:]
        return text

    def stream(self, *, skip_special: bool = True) -> StreamDecoder:
        """A :class:`StreamDecoder` for text generated with this tokenizer."""
        return StreamDecoder(self, skip_special=skip_special)

    def _starts_text(self, ids: list[int]) -> bool:
        """Whether the first non-BOS id starts a text fragment (got the prefix "▁")."""
        first = 1 if ids and ids[0] == self.bos_id else 0
        if first >= len(ids):
            return False
        return bool(self._types[ids[first]] not in SPECIAL_TYPES)

    def _piece(self, token_id: int) -> bytes:
        token = self._tokens[token_id]
        kind = self._types[token_id]
        if kind in SPECIAL_TYPES:
            return token.encode()
        if kind == TokenType.UNUSED:
            return b""
        if self.kind == "llama":
            if kind == TokenType.BYTE:
                return _byte_token_value(token, token_id)
            return token.replace(SPACE_MARK, " ").encode()
        table = self._byte_decoder
        if all(c in table for c in token):
            return bytes(table[c] for c in token)
        return token.encode()

    def _check_id(self, token_id: int) -> None:
        if not 0 <= token_id < len(self._tokens):
            raise ComputeError(
                f"token id {token_id} is outside the vocabulary (0..{len(self._tokens) - 1})"
            )


class StreamDecoder:
    """Turns generated ids into text as they arrive, never splitting a UTF-8 character.

    ``push`` returns only the text that became printable: the three byte-fallback tokens
    ``<0xE2><0x82><0xAC>`` return ``""``, ``""``, ``"€"``. No leading space is stripped: the
    pushed ids continue a prompt.

    Example::

        stream = tokenizer.stream()
        for token_id in generate():
            print(stream.push(token_id), end="", flush=True)
        print(stream.flush())
    """

    def __init__(self, tokenizer: Tokenizer, *, skip_special: bool = True) -> None:
        """Decode ids of ``tokenizer``; ``skip_special`` as in :meth:`Tokenizer.decode`."""
        self._tokenizer = tokenizer
        self._skip_special = skip_special
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Add one id; return the text it completes (possibly empty)."""
        piece = self._tokenizer.token_bytes(token_id, skip_special=self._skip_special)
        return str(self._decoder.decode(piece, final=False))

    def flush(self) -> str:
        """End of stream: return what is still held (an incomplete character as U+FFFD)."""
        return str(self._decoder.decode(b"", final=True))


def _translated[T](build: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``build(*args, **kwargs)`` with errors of ``tokenizers`` (plain ``Exception``s, or a
    Rust panic) as :class:`FormatError`: they come from the file's tokenizer data (a merge
    naming a token the vocabulary lacks, an unknown token that is not in it...)."""
    try:
        return build(*args, **kwargs)
    except (FormatError, UnsupportedError):
        raise
    except Exception as exc:
        raise FormatError(f"{PREFIX}* data cannot build a tokenizer: {exc}") from exc
    except BaseException as exc:
        if type(exc).__name__ == "PanicException":  # pyo3's, a BaseException
            raise FormatError(f"{PREFIX}* data cannot build a tokenizer: {exc}") from exc
        raise


def _byte_token_value(token: str, token_id: int) -> bytes:
    if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
        try:
            return bytes([int(token[3:5], 16)])
        except ValueError:
            pass
    raise FormatError(f"byte token {token_id} is {token!r}, expected '<0xNN>'")
