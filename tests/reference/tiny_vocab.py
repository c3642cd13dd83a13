"""Tiny but valid tokenizer sections for the tiny GGUF models.

Two flavours, laid out as llama.cpp's converter writes them:

- ``llama`` (SentencePiece BPE) for llama and gemma3: special tokens, the 256 byte-fallback
  tokens ``<0x00>``..``<0xFF>``, then pieces scored ``0, -1, -2, ...`` (higher merges first).
  Every word is reachable by merging adjacent pieces: each word's prefixes are pieces.
- ``gpt2`` (byte-level BPE) for qwen2: the 256 GPT-2 byte characters, merged tokens in merge
  order (merges added until BPE turns each word into a single token), then control tokens.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from gguf import TokenType

# Words of the tiny vocabularies: enough for "The capital of France is Paris" and friends.
WORDS = (
    "the",
    "The",
    "capital",
    "of",
    "France",
    "is",
    "Paris",
    "a",
    "and",
    "to",
    "in",
    "hello",
    "Hello",
    "world",
    "model",
    "weights",
    "pull",
    "cat",
    "dog",
    "on",
)

SPM_SPACE = "\u2581"  # "▁", SentencePiece's space


@dataclass
class Vocab:
    """A tokenizer section: what ``tokenizer.ggml.*`` holds."""

    model: str  # tokenizer.ggml.model
    pre: str | None
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    merges: list[str] | None = None
    special_ids: dict[str, int] = field(default_factory=dict)  # bos/eos/unk/pad/...
    add_bos: bool = True
    add_eos: bool = False
    add_space_prefix: bool | None = None
    chat_template: str | None = None

    def pad_to(self, size: int) -> None:
        """Append ``<unusedN>`` tokens (type UNUSED) up to ``size`` tokens."""
        if size < len(self.tokens):
            raise ValueError(f"vocab_size {size} < the {len(self.tokens)} tokens of the vocab")
        for i in range(size - len(self.tokens)):
            self.tokens.append(f"<unused{i}>")
            self.types.append(TokenType.UNUSED)
            if self.scores is not None:
                self.scores.append(-1000.0)


def _byte_tokens() -> list[str]:
    return [f"<0x{b:02X}>" for b in range(256)]


def _spm_pieces(words: tuple[str, ...]) -> list[str]:
    """Pieces for SPM merging: every prefix (len >= 2) of each ``▁word`` and bare word,
    ordered shortest first, then the single characters."""
    pieces: dict[str, None] = {}
    chars: dict[str, None] = {SPM_SPACE: None}
    for w in words:
        for form in (SPM_SPACE + w, w):
            for end in range(2, len(form) + 1):
                pieces[form[:end]] = None
            chars.update(dict.fromkeys(form))
    ordered = sorted(pieces, key=lambda p: (len(p), p))
    return ordered + sorted(c for c in chars if c not in pieces)


def spm_vocab(specials: Sequence[tuple[str, int]], ids: dict[str, int], *, gemma: bool) -> Vocab:
    """A SentencePiece vocabulary: ``specials`` first, then bytes, then scored pieces."""
    tokens = [t for t, _ in specials]
    types = [int(k) for _, k in specials]
    scores = [-1000.0 if gemma else 0.0] * len(specials)
    tokens += _byte_tokens()
    types += [TokenType.BYTE] * 256
    scores += [0.0] * 256
    pieces = _spm_pieces(WORDS)
    tokens += pieces
    types += [TokenType.NORMAL] * len(pieces)
    scores += [-float(i) for i in range(len(pieces))]
    return Vocab(
        model="llama",
        pre="default" if gemma else None,
        tokens=tokens,
        types=types,
        scores=scores,
        special_ids=ids,
        add_bos=True,
        add_space_prefix=not gemma,
    )


def llama_vocab() -> Vocab:
    """Llama-2 style: ``<unk>``=0, ``<s>``=1, ``</s>``=2, bytes at 3..258."""
    specials = [
        ("<unk>", TokenType.UNKNOWN),
        ("<s>", TokenType.CONTROL),
        ("</s>", TokenType.CONTROL),
    ]
    return spm_vocab(specials, {"unk": 0, "bos": 1, "eos": 2}, gemma=False)


def gemma3_vocab() -> Vocab:
    """Gemma-3 style: ``<pad>``=0, ``<eos>``=1, ``<bos>``=2, ``<unk>``=3, turn markers, ``\\n``."""
    specials = [
        ("<pad>", TokenType.CONTROL),
        ("<eos>", TokenType.CONTROL),
        ("<bos>", TokenType.CONTROL),
        ("<unk>", TokenType.CONTROL),
        ("<mask>", TokenType.CONTROL),
        ("<start_of_turn>", TokenType.CONTROL),
        ("<end_of_turn>", TokenType.CONTROL),
        ("\n", TokenType.USER_DEFINED),
    ]
    return spm_vocab(specials, {"pad": 0, "eos": 1, "bos": 2, "unk": 3}, gemma=True)


def gpt2_byte_chars() -> list[str]:
    """GPT-2 ``bytes_to_unicode``: the printable character standing for each byte 0..255."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def bpe_segment(word: str, merges: list[tuple[str, str]]) -> list[str]:
    """Byte-level BPE of one pre-token: apply the lowest-rank adjacent merge until none."""
    ranks = {pair: i for i, pair in enumerate(merges)}
    parts = list(word)
    while len(parts) > 1:
        pairs = [(ranks.get((a, b), len(ranks)), i) for i, (a, b) in enumerate(pairs_of(parts))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts


def pairs_of(parts: list[str]) -> list[tuple[str, str]]:
    """Adjacent pairs of ``parts``."""
    return list(itertools.pairwise(parts))


QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def qwen2_vocab() -> Vocab:
    """Qwen2 style byte-level BPE with merges, ``pre="qwen2"``, ChatML control tokens."""
    byte_chars = gpt2_byte_chars()
    space = byte_chars[ord(" ")]  # "Ġ"
    # GPT-2 vocabularies list the printable bytes first, in byte order, then the rest.
    tokens = sorted(byte_chars, key=lambda c: (ord(c) >= 256, ord(c)))
    merges: list[tuple[str, str]] = []
    for w in WORDS:
        for form in (space + w, w):
            # Add merges until BPE (lowest rank first) turns the whole form into one token;
            # a new merge ranks last, so it only joins the segmentation reached so far.
            while len(parts := bpe_segment(form, merges)) > 1:
                merges.append((parts[0], parts[1]))
                if parts[0] + parts[1] not in tokens:
                    tokens.append(parts[0] + parts[1])
    types = [int(TokenType.NORMAL)] * len(tokens)
    first_special = len(tokens)
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        tokens.append(special)
        types.append(TokenType.CONTROL)
    return Vocab(
        model="gpt2",
        pre="qwen2",
        tokens=tokens,
        types=types,
        merges=[f"{a} {b}" for a, b in merges],
        special_ids={"eos": first_special + 2, "pad": first_special, "bos": first_special},
        add_bos=False,
        chat_template=QWEN_CHAT_TEMPLATE,
    )
