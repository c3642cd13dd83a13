"""Entry points of the numpy reference: logits, greedy generation, hidden states.

The reference reads the GGUF with gguf-py alone, dequantizes every tensor to float32 and
runs a full forward pass over the whole sequence (no KV cache) in float64, picking the
architecture by ``general.architecture``. It never imports pullweights: it is the oracle
the pullweights loaders are tested against.

Example::

    logits = reference_logits(path, [2, 651, 6037])   # float32 (3, vocab)
    ids = reference_generate(path, [2, 651, 6037], 5)  # 5 greedy token ids
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from . import gemma3, llama, qwen2
from .common import F64
from .gguf_model import GGUFModel, load_gguf
from .numerics import EXACT, Numerics


class Forward(Protocol):
    """Signature shared by the per-architecture ``forward`` functions."""

    def __call__(
        self,
        model: GGUFModel,
        token_ids: Sequence[int],
        *,
        numerics: Numerics = ...,
        last_only: bool = ...,
        hidden_states: list[F64] | None = ...,
    ) -> F64: ...


ARCHITECTURES: dict[str, Forward] = {
    "llama": llama.forward,
    "qwen2": qwen2.forward,
    "gemma3": gemma3.forward,
}


class ReferenceModel:
    """A GGUF model dequantized once, for repeated reference forward passes.

    Args:
        path: GGUF file of a ``llama``, ``qwen2`` or ``gemma3`` model.
        numerics: ``EXACT`` (float64, the default) or ``LLAMACPP`` (round like ggml's CPU
            backend, to compare with llama.cpp at float32 precision).

    Raises:
        NotImplementedError: the file's architecture is not one of those.
    """

    def __init__(self, path: str | Path, *, numerics: Numerics = EXACT) -> None:
        self.model = load_gguf(path)
        self.numerics = numerics
        try:
            self._forward = ARCHITECTURES[self.model.arch]
        except KeyError:
            raise NotImplementedError(
                f"{path}: no reference for architecture {self.model.arch!r}"
            ) from None

    @property
    def vocab_size(self) -> int:
        """Rows of ``token_embd.weight``."""
        return int(self.model.tensor("token_embd.weight").shape[0])

    def _check_ids(self, token_ids: Sequence[int]) -> None:
        if len(token_ids) == 0:
            raise ValueError("token_ids is empty")
        ids = np.asarray(token_ids)
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise ValueError(f"token ids outside [0, {self.vocab_size}): {list(token_ids)}")

    def logits(self, token_ids: Sequence[int]) -> npt.NDArray[np.float32]:
        """Float32 logits ``(len(token_ids), vocab)``, computed in float64."""
        self._check_ids(token_ids)
        return self._forward(self.model, token_ids, numerics=self.numerics).astype(np.float32)

    def hidden_states(self, token_ids: Sequence[int]) -> list[npt.NDArray[np.float32]]:
        """Residual stream ``(seq, hidden)``: the (scaled) embeddings, then each block's output.

        ``n_layers + 1`` arrays, before the final norm.
        """
        self._check_ids(token_ids)
        states: list[F64] = []
        self._forward(
            self.model, token_ids, numerics=self.numerics, last_only=True, hidden_states=states
        )
        return [s.astype(np.float32) for s in states]

    def generate(
        self, token_ids: Sequence[int], n: int, *, stop: Callable[[int], bool] | None = None
    ) -> list[int]:
        """``n`` greedy (argmax) tokens after ``token_ids``; stops early when ``stop(id)``."""
        ids = list(token_ids)
        out: list[int] = []
        for _ in range(n):
            self._check_ids(ids)
            logits = self._forward(self.model, ids, numerics=self.numerics, last_only=True)
            nxt = int(np.argmax(logits[-1]))
            out.append(nxt)
            ids.append(nxt)
            if stop is not None and stop(nxt):
                break
        return out


def reference_logits(
    gguf_path: str | Path, token_ids: Sequence[int], *, numerics: Numerics = EXACT
) -> npt.NDArray[np.float32]:
    """Reference logits ``float32 (len(token_ids), vocab)`` of the model in ``gguf_path``.

    Every position of the sequence is computed with a causal mask (no KV cache).
    """
    return ReferenceModel(gguf_path, numerics=numerics).logits(token_ids)


def reference_generate(gguf_path: str | Path, token_ids: Sequence[int], n: int) -> list[int]:
    """``n`` greedy token ids following ``token_ids`` (argmax of the reference logits)."""
    return ReferenceModel(gguf_path).generate(token_ids, n)


def reference_hidden_states(
    gguf_path: str | Path, token_ids: Sequence[int]
) -> list[npt.NDArray[np.float32]]:
    """Embeddings then each block's output, ``n_layers + 1`` arrays ``(seq, hidden)``."""
    return ReferenceModel(gguf_path).hidden_states(token_ids)
