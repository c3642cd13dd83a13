"""Tokenizers built from GGUF-style metadata of tiny vocabularies (no model files needed).

The SentencePiece-style tokenizer is checked against a direct, slow implementation of
llama.cpp's SPM algorithm (merge the adjacent pair whose concatenation has the best score,
leftmost first; byte fallback for what is left) on random text; the byte-level BPE one against
ids worked out by hand and Hugging Face's ByteLevel byte mapping.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from tokenizers import pre_tokenizers

from loaders.tokenizer import StreamDecoder, Tokenizer, TokenType
from pullweights.errors import ComputeError, FormatError, UnsupportedError
from tests.loaders.vocabularies import (
    ALPHABET,
    BYTES,
    CONTROL,
    PIECES,
    USER_DEFINED,
    bpe_metadata,
    reference_spm,
    spm_metadata,
)


@pytest.fixture(scope="module")
def spm() -> Tokenizer:
    return Tokenizer.from_gguf_metadata(spm_metadata())


def ids_of(tokenizer: Tokenizer, *pieces: str) -> list[int]:
    found = [tokenizer.token_to_id(p) for p in pieces]
    assert None not in found, pieces
    return [i for i in found if i is not None]


def test_spm_matches_llamacpp_algorithm_on_random_text(spm: Tokenizer) -> None:
    meta = spm_metadata()
    rng = random.Random(1234)
    for _ in range(300):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 24)))
        expected = reference_spm(text, meta)
        assert spm.encode(text, add_special=False) == expected, text


def test_spm_space_prefix_on_every_fragment() -> None:
    meta = spm_metadata(add_space_prefix=True)
    tokenizer = Tokenizer.from_gguf_metadata(meta)
    rng = random.Random(99)
    for _ in range(100):
        text = "".join(rng.choice("elohwrdabc ") for _ in range(rng.randint(1, 16)))
        expected = reference_spm(text, meta, space_prefix=True)
        assert tokenizer.encode(text, add_special=False) == expected, text
    # A fragment after a special token gets its own prefix, as in llama.cpp.
    ids = tokenizer.encode("hello<end_of_turn>world", add_special=False)
    assert ids == [
        *reference_spm("hello", meta, space_prefix=True),
        *ids_of(tokenizer, "<end_of_turn>"),
        *reference_spm("world", meta, space_prefix=True),
    ]
    assert ids[-1] == tokenizer.token_to_id("▁world")
    assert tokenizer.decode(ids, skip_special=False) == "hello<end_of_turn> world"
    assert tokenizer.decode(tokenizer.encode("hello world")) == "hello world"


def test_spm_known_ids(spm: Tokenizer) -> None:
    assert spm.encode("hello world", add_special=False) == ids_of(spm, "hello", "▁world")
    # "ab" (best score) merges first, then "cd" beats "abc": [ab][cd], not [abc][d].
    assert spm.encode("abcd", add_special=False) == ids_of(spm, "ab", "cd")
    assert spm.encode("   a", add_special=False) == ids_of(spm, "  ", "▁a")


def test_spm_byte_fallback_and_decode(spm: Tokenizer) -> None:
    ids = spm.encode("a€b", add_special=False)
    assert ids == ids_of(spm, "a", "<0xE2>", "<0x82>", "<0xAC>", "b")
    assert spm.decode(ids) == "a€b"
    text = "日本 héllo wörld"
    assert spm.decode(spm.encode(text)) == text


def test_spm_special_tokens(spm: Tokenizer) -> None:
    text = "<start_of_turn>hello\n\nworld<end_of_turn>"
    ids = spm.encode(text, add_special=False)
    assert ids == ids_of(spm, "<start_of_turn>", "hello", "\n\n", "world", "<end_of_turn>")
    assert spm.decode(ids, skip_special=False) == text
    assert spm.decode(ids) == "hello\n\nworld"
    plain = spm.encode(text, add_special=False, parse_special=False)
    assert spm.token_to_id("<start_of_turn>") not in plain
    assert ids_of(spm, "\n\n")[0] in plain  # user-defined tokens are always matched
    assert spm.decode(plain) == text
    # Longest user-defined match wins: three newlines are "\n\n" then "\n".
    assert spm.encode("\n\n\n", add_special=False) == ids_of(spm, "\n\n", "\n")


def test_spm_bos_eos_rules(spm: Tokenizer) -> None:
    bos, eos = spm.bos_id, spm.eos_id
    assert (bos, eos) == (2, 1)
    assert spm.add_bos and not spm.add_eos  # llama.cpp's SPM defaults when keys are absent
    assert spm.encode("hello") == [bos, *ids_of(spm, "hello")]
    assert spm.encode("hello", add_special=False) == ids_of(spm, "hello")
    both = Tokenizer.from_gguf_metadata(spm_metadata(add_bos_token=False, add_eos_token=True))
    assert both.encode("hello") == [*ids_of(both, "hello"), eos]
    assert spm.encode("") == [bos]
    assert spm.decode(spm.encode("hello")) == "hello"


def test_spm_properties(spm: Tokenizer) -> None:
    assert spm.vocab_size == len(CONTROL) + len(USER_DEFINED) + len(BYTES) + len(PIECES)
    assert spm.eog_ids == frozenset(ids_of(spm, "<eos>", "<end_of_turn>"))
    assert spm.is_eog(1) and not spm.is_eog(2)
    assert spm.special_ids == frozenset(range(len(CONTROL)))
    assert spm.token_type(2) is TokenType.CONTROL
    assert spm.id_to_token(len(CONTROL)) == "\n"
    assert spm.token_to_id("no such piece") is None
    assert (spm.pad_id, spm.unk_id) == (0, 3)


def test_stream_decoder_holds_split_characters(spm: Tokenizer) -> None:
    stream = spm.stream()
    pushed = [stream.push(i) for i in ids_of(spm, "hello", "<0xE2>", "<0x82>", "<0xAC>", "▁world")]
    assert pushed == ["hello", "", "", "€", " world"]
    assert stream.flush() == ""
    # An incomplete character at the end is flushed as U+FFFD; control tokens print nothing.
    stream = StreamDecoder(spm)
    assert [stream.push(i) for i in ids_of(spm, "<end_of_turn>", "<0xE6>", "<0x97>")] == [""] * 3
    assert stream.flush() == "\ufffd"
    shown = StreamDecoder(spm, skip_special=False)
    assert shown.push(ids_of(spm, "<end_of_turn>")[0]) == "<end_of_turn>"


def test_stream_decoder_equals_decode_on_random_ids(spm: Tokenizer) -> None:
    rng = np.random.default_rng(5)
    for _ in range(50):
        ids = rng.integers(0, spm.vocab_size, size=20).tolist()
        stream = spm.stream()
        text = "".join(stream.push(i) for i in ids) + stream.flush()
        assert text == spm.decode(ids)


# --------------------------------------------------------------------------- GPT-2 BPE vocabulary


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    return Tokenizer.from_gguf_metadata(bpe_metadata())


def byte_level(text: str) -> list[str]:
    """The printable byte-level characters of ``text`` (Hugging Face's mapping)."""
    mapped = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return list("".join(piece for piece, _ in mapped.pre_tokenize_str(text)))


def test_bpe_known_ids(bpe: Tokenizer) -> None:
    assert bpe.encode("hello world") == ids_of(bpe, "hello", "Ġworld")  # no BOS by default
    assert not bpe.add_bos
    assert bpe.encode("helloworld") == ids_of(bpe, "hello", "w", "or", "ld")
    assert bpe.encode("€") == ids_of(bpe, *byte_level("€"))
    assert len(bpe.encode("€")) == 3


@pytest.mark.parametrize(
    ("pre", "pieces"),
    [
        ("qwen2", ["1", "2", "1", "2", "1", "2"]),  # \p{N}: one digit per word
        ("llama3", ["12", "1", "2", "12"]),  # \p{N}{1,3}: "121" "212"
        ("gpt-2", ["12", "12", "12"]),  # " ?\p{N}+": one word
    ],
)
def test_bpe_pre_tokenizer_regex(pre: str, pieces: list[str]) -> None:
    tokenizer = Tokenizer.from_gguf_metadata(bpe_metadata(pre))
    assert tokenizer.encode("121212", add_special=False) == ids_of(tokenizer, *pieces)


def test_bpe_special_tokens_and_decode(bpe: Tokenizer) -> None:
    text = "<|im_start|>hello<tool_call> world<|im_end|>"
    ids = bpe.encode(text)
    assert ids == ids_of(bpe, "<|im_start|>", "hello", "<tool_call>", "Ġworld", "<|im_end|>")
    assert bpe.decode(ids, skip_special=False) == text
    assert bpe.decode(ids) == "hello<tool_call> world"
    plain = bpe.encode(text, parse_special=False)
    assert ids_of(bpe, "<|im_start|>")[0] not in plain
    assert ids_of(bpe, "<tool_call>")[0] in plain
    assert bpe.decode(plain) == text
    assert bpe.eog_ids == frozenset(ids_of(bpe, "<|endoftext|>", "<|im_end|>"))
    for text in ["héllo wörld ✓ 日本語\n\n  x", "tabs\tand\r\nnewlines", "😀👍🏽"]:
        assert bpe.decode(bpe.encode(text)) == text


def test_bpe_stream_decoder(bpe: Tokenizer) -> None:
    stream = bpe.stream()
    euro = ids_of(bpe, *byte_level("€"))
    assert [stream.push(i) for i in [*ids_of(bpe, "hello"), *euro]] == ["hello", "", "", "€"]


# --------------------------------------------------------------------------- errors


def test_unsupported_vocabulary_and_pre_tokenizer() -> None:
    with pytest.raises(UnsupportedError, match=r"tokenizer\.ggml\.model = 'bert'"):
        Tokenizer.from_gguf_metadata(spm_metadata(model="bert"))
    with pytest.raises(UnsupportedError, match="'chameleon'"):
        Tokenizer.from_gguf_metadata(bpe_metadata("chameleon"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tokens": None}, "tokenizer.ggml.tokens must be a list"),
        ({"tokens": ["a", "a"]}, "same entry twice"),
        ({"scores": np.zeros(3, np.float32)}, r"tokenizer.ggml.scores has shape \(3,\)"),
        ({"scores": None}, "scores is required"),
        ({"token_type": ["x"] * 301}, "token_type"),
        ({"add_bos_token": "yes"}, "add_bos_token must be a boolean"),
        ({"bos_token_id": None, "add_bos_token": True}, "bos_token_id is missing"),
        ({"bos_token_id": "2"}, "bos_token_id must be an integer"),
    ],
)
def test_malformed_metadata(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(FormatError, match=message):
        Tokenizer.from_gguf_metadata(spm_metadata(**overrides))


def test_bad_merges() -> None:
    with pytest.raises(FormatError, match=r"tokenizer.ggml.merges\[1\] = 'xy'"):
        Tokenizer.from_gguf_metadata(bpe_metadata(merges=["h e", "xy"]))


def test_decode_rejects_unknown_ids(spm: Tokenizer) -> None:
    with pytest.raises(ComputeError, match="token id 100000 is outside the vocabulary"):
        spm.decode([1, 100000])
    with pytest.raises(ComputeError, match="token id -1"):
        spm.stream().push(-1)
