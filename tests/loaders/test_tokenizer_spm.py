"""The vectorised SPM merge derivation against the definition, written out as a plain loop.

:func:`loaders.tokenizer_spm.spm_merges` finds splits through 64-bit substring hashes; these
tests compare it with the per-entry loop on random vocabularies (non-BMP characters, NUL, lone
surrogates, tied scores) and force hash collisions with a degenerate hash base (1: every
anagram collides) to check that a collision can neither add nor lose a merge.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from loaders import tokenizer_spm
from loaders.tokenizer_spm import spm_merges

ALPHABET = "ab▁é日😀\x00\ud800 c"


def reference_merges(tokens: list[str], scores: np.ndarray) -> list[tuple[str, str]]:
    """Every split into two entries; entries by descending score (id order on ties)."""
    vocab = set(tokens)
    ranked = sorted(range(len(tokens)), key=lambda i: (-float(scores[i]), i))
    return [
        (tokens[i][:cut], tokens[i][cut:])
        for i in ranked
        for cut in range(1, len(tokens[i]))
        if tokens[i][:cut] in vocab and tokens[i][cut:] in vocab
    ]


def random_vocabulary(seed: int, size: int = 3000) -> tuple[list[str], np.ndarray]:
    rng = random.Random(seed)
    tokens = dict.fromkeys(ALPHABET)
    while len(tokens) < size:
        length = rng.randint(2, 9)
        tokens["".join(rng.choice(ALPHABET) for _ in range(length))] = None
    ordered = list(tokens)
    rng.shuffle(ordered)
    # Few distinct scores: many ties, which the ranking must break by id.
    scores = np.array([rng.randint(-40, 0) for _ in ordered], dtype=np.float32)
    return ordered, scores


@pytest.mark.parametrize("seed", range(4))
def test_merges_match_definition(seed: int) -> None:
    tokens, scores = random_vocabulary(seed)
    expected = reference_merges(tokens, scores)
    assert len(expected) > 1000
    assert spm_merges(tokens, scores) == expected


def test_merges_of_tiny_vocabularies() -> None:
    one = np.zeros(1, np.float32)
    assert spm_merges(["a"], one) == []
    assert spm_merges([""], one) == []
    assert spm_merges(["a", "b", "ab"], np.array([0, 0, 1], np.float32)) == [("a", "b")]


def test_false_hash_match_is_rejected(monkeypatch: Any) -> None:
    """With base 1 "zy" hashes like the entry "yz": the split "x"+"zy" must not be a merge."""
    monkeypatch.setattr(tokenizer_spm, "_BASE", 1)
    tokens = ["x", "y", "z", "yz", "xzy"]
    scores = np.zeros(len(tokens), np.float32)
    assert tokenizer_spm._SubstringIndex(tokens).unique  # the vectorised path is taken
    assert spm_merges(tokens, scores) == [("y", "z")] == reference_merges(tokens, scores)


def test_colliding_entries_use_the_loop(monkeypatch: Any) -> None:
    monkeypatch.setattr(tokenizer_spm, "_BASE", 1)
    tokens, scores = random_vocabulary(7, size=500)
    tokens += ["ab", "ba", "aba", "baa"]  # anagrams: equal hashes under base 1
    scores = np.concatenate([scores, np.array([1, 2, 3, 4], np.float32)])
    assert not tokenizer_spm._SubstringIndex(tokens).unique
    assert spm_merges(tokens, scores) == reference_merges(tokens, scores)


@pytest.mark.model
def test_gemma_merges_match_definition(model_metadata: dict[str, dict[str, object]]) -> None:
    meta = model_metadata["gemma3"]
    tokens = list(meta["tokenizer.ggml.tokens"])  # type: ignore[call-overload]
    scores = np.asarray(meta["tokenizer.ggml.scores"], dtype=np.float32)
    assert spm_merges(tokens, scores) == reference_merges(tokens, scores)
