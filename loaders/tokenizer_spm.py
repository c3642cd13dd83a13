"""SentencePiece-style ("llama") tokenizers rebuilt from GGUF vocabulary and scores.

llama.cpp's SPM tokenizer is SentencePiece's BPE: it splits text into UTF-8 characters and
repeatedly merges the adjacent pair whose concatenation is a vocabulary entry with the
highest score (leftmost first on ties); characters left without an entry become
``<0xNN>`` byte tokens; spaces become "▁", with a "▁" prefix on every text fragment when
``tokenizer.ggml.add_space_prefix`` says so. So the GGUF vocabulary, scores and token
types are written into a SentencePiece model (its protobuf, through ``sentencepiece``'s
own ``sentencepiece_model_pb2``) and encoded by the ``sentencepiece`` library itself.

Before that, special tokens are split out of the text the way llama.cpp does: every
user-defined token (Gemma's runs of spaces and newlines) — and, when special tokens are
parsed, every control and unknown token — longest first, each cutting the text fragments
left by the longer ones.

Building the model proto of Gemma 3's 262,144 entries takes ~0.8 s in Python and loading
it ~0.1 s, so the proto is kept in the weight cache (:mod:`pullweights.cache.blobs`) keyed
by a digest of the vocabulary: a later load only loads it.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sentencepiece import SentencePieceProcessor
from sentencepiece import sentencepiece_model_pb2 as _pb2

from loaders.tokenizer_metadata import SPECIAL_TYPES, TokenType
from pullweights.errors import FormatError

spm_pb2: Any = _pb2  # generated protobuf module (no type information)

__all__ = ["SPACE_MARK", "SpmBackend", "load_spm_backend", "spm_model_proto", "vocabulary_key"]

SPACE_MARK = "\u2581"
"""SentencePiece's visible space, "▁"."""

#: Bump when the proto built from the same vocabulary changes.
_PROTO_VERSION = 1
_PIECE_TYPES = {
    TokenType.NORMAL: spm_pb2.ModelProto.SentencePiece.NORMAL,
    TokenType.UNKNOWN: spm_pb2.ModelProto.SentencePiece.UNKNOWN,
    TokenType.CONTROL: spm_pb2.ModelProto.SentencePiece.CONTROL,
    TokenType.USER_DEFINED: spm_pb2.ModelProto.SentencePiece.USER_DEFINED,
    TokenType.UNUSED: spm_pb2.ModelProto.SentencePiece.UNUSED,
    TokenType.BYTE: spm_pb2.ModelProto.SentencePiece.BYTE,
}


def vocabulary_key(
    tokens: Sequence[str],
    scores: npt.NDArray[np.float32],
    types: npt.NDArray[np.int32],
    add_space_prefix: bool,
) -> str:
    """A digest of everything the model proto is made from (its cache key)."""
    h = hashlib.sha256(f"spm-{_PROTO_VERSION}-{add_space_prefix}-{len(tokens)}\0".encode())
    h.update("\0".join(tokens).encode("utf-8", "surrogatepass"))
    h.update(np.ascontiguousarray(scores, dtype="<f4").tobytes())
    h.update(np.ascontiguousarray(types, dtype="<i4").tobytes())
    return h.hexdigest()[:40]


def spm_model_proto(
    tokens: Sequence[str],
    scores: npt.NDArray[np.float32],
    types: npt.NDArray[np.int32],
    *,
    add_space_prefix: bool,
) -> bytes:
    """The serialized SentencePiece BPE model of a GGUF vocabulary (no normalization but
    the space marks; byte fallback)."""
    model = spm_pb2.ModelProto()
    model.trainer_spec.model_type = spm_pb2.TrainerSpec.BPE
    model.trainer_spec.byte_fallback = True
    unknown = np.flatnonzero(types == TokenType.UNKNOWN)
    model.trainer_spec.unk_id = int(unknown[0]) if unknown.size else 0
    spec = model.normalizer_spec
    spec.name = "identity"
    spec.add_dummy_prefix = add_space_prefix
    spec.remove_extra_whitespaces = False
    spec.escape_whitespaces = True
    normal = spm_pb2.ModelProto.SentencePiece.NORMAL
    add = model.pieces.add
    for token, score, kind in zip(tokens, scores.tolist(), types.tolist(), strict=True):
        add(piece=token, score=score, type=_PIECE_TYPES.get(kind, normal))
    proto: bytes = model.SerializeToString()
    return proto


class SpmBackend:
    """Encodes text with a SentencePiece model, special tokens split out first."""

    def __init__(self, proto: bytes, tokens: Sequence[str], types: npt.NDArray[np.int32]) -> None:
        processor = SentencePieceProcessor()
        try:
            processor.LoadFromSerializedProto(proto)
        except (RuntimeError, OSError) as exc:
            raise FormatError(f"tokenizer: the SentencePiece model is not valid: {exc}") from exc
        self._sp = processor
        self._lock = threading.Lock()
        special = np.flatnonzero(np.isin(types, SPECIAL_TYPES))
        self._ids = {tokens[i]: int(i) for i in special.tolist() if tokens[i]}
        # llama.cpp's order: longest first (its sort is stable on ids for equal lengths)
        ordered = sorted(self._ids, key=lambda t: (-len(t), self._ids[t]))
        user = {tokens[i] for i in np.flatnonzero(types == TokenType.USER_DEFINED).tolist()}
        self._always = [t for t in ordered if t in user]
        self._parsed = ordered
        self._vocab: dict[str, int] | None = None
        self._tokens = tokens

    def encode(self, text: str, *, parse_special: bool) -> list[int]:
        """Token ids of ``text``."""
        fragments: list[str | int] = [text]
        for token in self._parsed if parse_special else self._always:
            if token not in text:
                continue
            fragments = _split(fragments, token, self._ids[token])
        ids: list[int] = []
        for fragment in fragments:
            if isinstance(fragment, int):
                ids.append(fragment)
            elif fragment:
                ids.extend(self._sp.encode(fragment))
        return ids

    def token_to_id(self, token: str) -> int | None:
        """The id of the vocabulary entry ``token``, or None."""
        with self._lock:
            if self._vocab is None:
                self._vocab = {t: i for i, t in enumerate(self._tokens)}
        return self._vocab.get(token)


def _split(fragments: list[str | int], token: str, token_id: int) -> list[str | int]:
    """Every occurrence of ``token`` in the text fragments replaced by ``token_id``."""
    out: list[str | int] = []
    for fragment in fragments:
        if isinstance(fragment, int) or token not in fragment:
            out.append(fragment)
            continue
        start = 0
        while (found := fragment.find(token, start)) >= 0:
            if found > start:
                out.append(fragment[start:found])
            out.append(token_id)
            start = found + len(token)
        if start < len(fragment):
            out.append(fragment[start:])
    return out


def load_spm_backend(
    tokens: Sequence[str],
    scores: npt.NDArray[np.float32],
    types: npt.NDArray[np.int32],
    *,
    add_space_prefix: bool,
    cache_dir: Path | None,
) -> SpmBackend:
    """The SPM backend of a GGUF vocabulary, its model proto read from the weight cache
    under ``cache_dir`` when kept there before (and kept there now when not)."""
    from pullweights.cache.blobs import read_blob, write_blob

    key = vocabulary_key(tokens, scores, types, add_space_prefix)
    proto = None if cache_dir is None else read_blob(cache_dir, "spm", key)
    if proto is None:
        proto = spm_model_proto(tokens, scores, types, add_space_prefix=add_space_prefix)
        if cache_dir is not None:
            write_blob(cache_dir, "spm", key, proto)
    return SpmBackend(proto, tokens, types)
