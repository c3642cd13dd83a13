"""SentencePiece-style ("llama") tokenizers rebuilt from GGUF vocabulary and scores.

llama.cpp's SPM tokenizer splits text into UTF-8 characters and repeatedly merges the adjacent
pair whose concatenation is a vocabulary entry with the highest score (leftmost first on ties);
characters left without a vocabulary entry become ``<0xNN>`` byte tokens. That is a BPE whose
merge list holds every two-piece split of every vocabulary entry, ranked by the score of the
merged entry — the same construction Hugging Face uses for ``GemmaTokenizerFast`` and
``LlamaTokenizerFast``. The merge list is derived here and handed to the ``tokenizers`` BPE
model with byte fallback; spaces become "▁", optionally with a "▁" prefix on every text fragment
(``tokenizer.ggml.add_space_prefix``), as llama.cpp does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer, models, normalizers

__all__ = ["SPACE_MARK", "build_spm_tokenizer", "spm_merges"]

SPACE_MARK = "\u2581"
"""SentencePiece's visible space, "▁"."""


def spm_merges(tokens: Sequence[str], scores: npt.NDArray[np.float32]) -> list[tuple[str, str]]:
    """Every split ``(left, right)`` of a vocabulary entry into two entries, best score first.

    Entries are visited by descending score (vocabulary order on ties, a stable sort), and the
    splits of one entry left to right, so the BPE rank of a merge is the score order of the
    entry it produces.
    """
    vocab = set(tokens)
    merges: list[tuple[str, str]] = []
    append = merges.append
    for index in np.argsort(-scores, kind="stable").tolist():
        token = tokens[index]
        for cut in range(1, len(token)):
            left = token[:cut]
            if left in vocab:
                right = token[cut:]
                if right in vocab:
                    append((left, right))
    return merges


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
    vocab = {token: index for index, token in enumerate(tokens)}
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
