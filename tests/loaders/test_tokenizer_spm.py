"""The SentencePiece ("llama") backend: special tokens split out as llama.cpp does, and
the compiled model kept in (and read back from) the weight cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loaders.tokenizer_metadata import TokenType
from loaders.tokenizer_spm import SpmBackend, load_spm_backend, spm_model_proto, vocabulary_key
from pullweights.cache.blobs import read_blob

N, C, U, B = TokenType.NORMAL, TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.BYTE
TOKENS = [
    "<pad>", "<s>", "</s>", *[f"<0x{i:02X}>" for i in range(256)],
    "▁", "a", "b", "ab", "▁ab", "<ctl>", "  ", "   ", "<ctl>x",
]  # fmt: skip
TYPES = np.array([C, C, C, *[B] * 256, N, N, N, N, N, C, U, U, C], np.int32)
SCORES = np.array([0.0] * 259 + [-1.0, -2.0, -2.0, -0.5, -0.1, 0.0, 0.0, 0.0, 0.0], np.float32)
ID = {t: i for i, t in enumerate(TOKENS)}


def backend(prefix: bool = False) -> SpmBackend:
    proto = spm_model_proto(TOKENS, SCORES, TYPES, add_space_prefix=prefix)
    return SpmBackend(proto, TOKENS, TYPES)


def test_merges_by_score_and_bytes_for_the_rest() -> None:
    b = backend()
    assert b.encode("ab", parse_special=False) == [ID["ab"]]
    assert b.encode(" ab", parse_special=False) == [ID["▁ab"]]
    assert b.encode("c", parse_special=False) == [ID["<0x63>"]]  # byte fallback
    assert backend(prefix=True).encode("ab", parse_special=False) == [ID["▁ab"]]


def test_user_defined_always_control_only_when_parsed_longest_first() -> None:
    b = backend()
    # "   " (three spaces) wins over "  ": longest first, as llama.cpp partitions
    assert b.encode("a   b", parse_special=False) == [ID["a"], ID["   "], ID["b"]]
    assert b.encode("a<ctl>b", parse_special=True) == [ID["a"], ID["<ctl>"], ID["b"]]
    assert ID["<ctl>"] not in b.encode("a<ctl>b", parse_special=False)
    # a longer control token is cut first, even when a shorter one starts it
    assert b.encode("<ctl>x<ctl>", parse_special=True) == [ID["<ctl>x"], ID["<ctl>"]]


def test_token_to_id() -> None:
    b = backend()
    assert b.token_to_id("▁ab") == ID["▁ab"] and b.token_to_id("zz") is None


def test_the_compiled_model_is_kept_in_the_cache(tmp_path: Path) -> None:
    first = load_spm_backend(TOKENS, SCORES, TYPES, add_space_prefix=False, cache_dir=tmp_path)
    key = vocabulary_key(TOKENS, SCORES, TYPES, False)
    proto = read_blob(tmp_path, "spm", key)
    assert proto == spm_model_proto(TOKENS, SCORES, TYPES, add_space_prefix=False)
    again = load_spm_backend(TOKENS, SCORES, TYPES, add_space_prefix=False, cache_dir=tmp_path)
    text = "a   ab"
    assert again.encode(text, parse_special=False) == first.encode(text, parse_special=False)
    # another vocabulary (other flags) has another key
    assert vocabulary_key(TOKENS, SCORES, TYPES, True) != key


def test_a_damaged_cached_model_is_made_again(tmp_path: Path) -> None:
    load_spm_backend(TOKENS, SCORES, TYPES, add_space_prefix=False, cache_dir=tmp_path)
    (blob,) = (tmp_path / "blobs").iterdir()
    data = bytearray(blob.read_bytes())
    data[-3] ^= 0xFF
    blob.write_bytes(bytes(data))
    key = vocabulary_key(TOKENS, SCORES, TYPES, False)
    assert read_blob(tmp_path, "spm", key) is None  # the checksum catches it
    b = load_spm_backend(TOKENS, SCORES, TYPES, add_space_prefix=False, cache_dir=tmp_path)
    assert b.encode("ab", parse_special=False) == [ID["ab"]]
    assert read_blob(tmp_path, "spm", key) is not None  # replaced by a good one


def test_a_cache_that_cannot_be_written_only_skips_keeping_it(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    b = load_spm_backend(TOKENS, SCORES, TYPES, add_space_prefix=False, cache_dir=blocked)
    assert b.encode("ab", parse_special=False) == [ID["ab"]]


@pytest.mark.parametrize("bad", [b"", b"not a proto"])
def test_an_invalid_model_is_a_format_error(bad: bytes) -> None:
    from pullweights.errors import FormatError

    with pytest.raises(FormatError, match="SentencePiece model"):
        SpmBackend(bad, TOKENS, TYPES)
