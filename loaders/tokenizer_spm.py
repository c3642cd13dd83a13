"""SentencePiece-style ("llama") tokenizers rebuilt from GGUF vocabulary and scores.

llama.cpp's SPM tokenizer splits text into UTF-8 characters and repeatedly merges the adjacent
pair whose concatenation is a vocabulary entry with the highest score (leftmost first on ties);
characters left without a vocabulary entry become ``<0xNN>`` byte tokens. That is a BPE whose
merge list holds every two-piece split of every vocabulary entry, ranked by the score of the
merged entry — the same construction Hugging Face uses for ``GemmaTokenizerFast`` and
``LlamaTokenizerFast``. The merge list is derived here and handed to the ``tokenizers`` BPE
model with byte fallback; spaces become "▁", optionally with a "▁" prefix on every text fragment
(``tokenizer.ggml.add_space_prefix``), as llama.cpp does.

Deriving the merges of Gemma 3's 262,144 entries means testing 1.2 million splits. They are
tested all at once with numpy: every entry's code points are laid end to end, a polynomial
hash of any substring comes from a prefix sum, and each split's left and right hashes are
looked up among the entries' hashes with ``searchsorted``. Every split found is then
compared character by character, so a hash collision can never add a merge; if two entries
share a hash (a split could then be missed), the plain per-entry loop is used instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer, models, normalizers

__all__ = ["SPACE_MARK", "build_spm_tokenizer", "spm_merges"]

SPACE_MARK = "\u2581"
"""SentencePiece's visible space, "▁"."""

_BASE = 0x9E3779B97F4A7C15
"""Odd multiplier of the substring hash (invertible modulo 2**64)."""
_LENGTH_MIX = 0xD6E8FEB86659FD93
"""Times the length, added to a hash so that strings of different lengths differ more."""
_CHUNK = 65536
"""Entries whose splits are tested together: temporaries of ~10 MB, few GIL hand-overs."""

_IntArray = npt.NDArray[np.int64]
_KeyArray = npt.NDArray[np.uint64]


def spm_merges(tokens: Sequence[str], scores: npt.NDArray[np.float32]) -> list[tuple[str, str]]:
    """Every split ``(left, right)`` of a vocabulary entry into two entries, best score first.

    Entries are visited by descending score (vocabulary order on ties, a stable sort), and the
    splits of one entry left to right, so the BPE rank of a merge is the score order of the
    entry it produces.
    """
    order = np.argsort(-scores, kind="stable")
    index = _SubstringIndex(tokens)
    if not index.unique:
        return _merges_by_loop(tokens, order)
    left, right = index.splits(order)
    entries = np.array(tokens, dtype=object)
    return list(zip(entries[left].tolist(), entries[right].tolist(), strict=True))


def _merges_by_loop(tokens: Sequence[str], order: npt.NDArray[np.intp]) -> list[tuple[str, str]]:
    """:func:`spm_merges` one split at a time (the definition; used on a hash collision)."""
    vocab = set(tokens)
    merges: list[tuple[str, str]] = []
    append = merges.append
    for index in order.tolist():
        token = tokens[index]
        for cut in range(1, len(token)):
            left = token[:cut]
            if left in vocab:
                right = token[cut:]
                if right in vocab:
                    append((left, right))
    return merges


class _SubstringIndex:
    """Hashes of every substring of every vocabulary entry, and the entries' hashes sorted.

    The hash of code points ``c[a:b]`` of one entry starting at ``s`` is
    ``sum((c[j] + 1) * BASE**(j - a)) + (b - a) * LENGTH_MIX`` modulo 2**64, computed as
    ``(R[b] - R[a]) * BASE**-(a - s)`` from the prefix sums ``R`` of ``(c[j] + 1) *
    BASE**(j - s)`` (numpy's unsigned arithmetic wraps, which is the modulo).
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        n = len(tokens)
        self.lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=n)
        self.starts = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=self.starts[1:])
        text = "".join(tokens).encode("utf-32-le", "surrogatepass")
        self.chars = np.frombuffer(text, dtype="<u4")
        longest = int(self.lengths.max()) if n else 0
        self._inverse_powers = _powers(pow(_BASE, -1, 1 << 64), longest + 1)
        offset = np.arange(self.chars.size, dtype=np.int64)  # of each character in its entry
        offset -= np.repeat(self.starts[:-1], self.lengths)
        weighted = (self.chars + np.uint64(1)) * _powers(_BASE, longest + 1)[offset]
        del offset
        self._prefix = np.zeros(self.chars.size + 1, dtype=np.uint64)
        np.cumsum(weighted, out=self._prefix[1:])
        del weighted
        keys = self._key(self.starts[:-1], self.starts[1:])
        self._order = np.argsort(keys)
        self._sorted = keys[self._order]
        self.unique = not bool(np.any(self._sorted[1:] == self._sorted[:-1]))

    def _key(self, begin: _IntArray, end: _IntArray, skip: _IntArray | None = None) -> _KeyArray:
        """Hashes of ``chars[begin:end]``, each ``skip`` characters into its entry (or 0)."""
        total = self._prefix[end] - self._prefix[begin]
        if skip is not None:
            total *= self._inverse_powers[skip]
        return total + (end - begin).astype(np.uint64) * np.uint64(_LENGTH_MIX)

    def _find(self, keys: _KeyArray) -> _IntArray:
        """The entry with each hash, or -1 (entries' hashes are distinct: ``unique``)."""
        where = np.searchsorted(self._sorted, keys)
        where[where == self._sorted.size] = 0
        found = self._order[where]
        found[self._sorted[where] != keys] = -1
        return found

    def splits(self, order: npt.NDArray[np.intp]) -> tuple[_IntArray, _IntArray]:
        """Ids of the left and right entry of every split, entries taken in ``order``."""
        lefts: list[_IntArray] = []
        rights: list[_IntArray] = []
        for begin in range(0, order.size, _CHUNK):
            left, right = self._chunk_splits(order[begin : begin + _CHUNK].astype(np.int64))
            lefts.append(left)
            rights.append(right)
        if not lefts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(lefts), np.concatenate(rights)

    def _chunk_splits(self, entries: _IntArray) -> tuple[_IntArray, _IntArray]:
        # Every cut 1 .. length-1 of every entry, entry by entry, left to right.
        cuts = np.maximum(self.lengths[entries] - 1, 0)
        entry = np.repeat(entries, cuts)
        cut = np.arange(entry.size, dtype=np.int64) - np.repeat(np.cumsum(cuts) - cuts, cuts) + 1
        begin = self.starts[entry]
        middle = begin + cut
        left = self._find(self._key(begin, middle))
        hit = left >= 0
        entry, cut, middle, left = entry[hit], cut[hit], middle[hit], left[hit]
        right = self._find(self._key(middle, self.starts[entry + 1], cut))
        hit = right >= 0
        entry, cut, left, right = entry[hit], cut[hit], left[hit], right[hit]
        same = self._same_text(entry, cut, left, right)
        return left[same], right[same]

    def _same_text(
        self, entry: _IntArray, cut: _IntArray, left: _IntArray, right: _IntArray
    ) -> npt.NDArray[np.bool_]:
        """Whether ``left + right`` is ``entry``, character by character (no hash trusted)."""
        length = self.lengths[entry]
        same: npt.NDArray[np.bool_] = (self.lengths[left] == cut) & (
            self.lengths[right] == length - cut
        )
        check = np.flatnonzero(same)
        if check.size == 0:
            return same
        # Character positions fit in int32 (half the memory traffic of int64).
        begin = self.starts[entry[check]].astype(np.int32)
        length = length[check].astype(np.int32)
        cut = cut[check].astype(np.int32)
        # The merged entry's characters, and as many read from the left then the right entry:
        # one run per part, each at a fixed distance from the merged entry's characters.
        parts = np.stack([cut, length - cut], axis=1).ravel()
        shift = np.stack(
            [self.starts[left[check]] - begin, self.starts[right[check]] - begin - cut], axis=1
        ).ravel()
        first = np.zeros(check.size, dtype=np.int32)
        np.cumsum(length[:-1], out=first[1:])
        merged = np.arange(int(first[-1] + length[-1]), dtype=np.int32)
        merged += np.repeat(begin - first, length)
        source = merged + np.repeat(shift.astype(np.int32), parts)
        equal = self.chars[merged] == self.chars[source]
        same[check] = np.logical_and.reduceat(equal, first)
        return same


def _powers(base: int, count: int) -> _KeyArray:
    """``base**0 .. base**(count-1)`` modulo 2**64."""
    powers = np.full(count, base, dtype=np.uint64)
    powers[0] = 1
    return np.cumprod(powers, dtype=np.uint64)


def build_spm_tokenizer(
    tokens: Sequence[str],
    scores: npt.NDArray[np.float32],
    *,
    add_space_prefix: bool,
    unk_token: str | None,
) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` reproducing llama.cpp's SPM tokenization of plain text.

    Special (added) tokens are not registered here; the caller adds them so that token ids
    stay those of the GGUF vocabulary.
    """
    vocab = dict(zip(tokens, range(len(tokens)), strict=True))
    model = models.BPE(
        vocab=vocab,
        merges=spm_merges(tokens, scores),
        unk_token=unk_token,
        byte_fallback=True,
        fuse_unk=False,
    )
    tokenizer = Tokenizer(model)
    steps: list[normalizers.Normalizer] = []
    if add_space_prefix:
        steps.append(normalizers.Prepend(SPACE_MARK))
    steps.append(normalizers.Replace(" ", SPACE_MARK))
    tokenizer.normalizer = normalizers.Sequence(steps)
    return tokenizer
