"""Choosing the next token from logits: greedy, temperature, top-k, top-p, repetition penalty.

The order is Hugging Face's: repetition penalty on the raw logits, then temperature, then
top-k, then top-p (nucleus) on the probabilities that remain, then one seeded draw. Everything
is vectorised: top-k is an ``argpartition``, top-p a cumulative sum over the sorted (already
reduced) candidates.

Example::

    sampler = Sampler(SamplingParams(temperature=0.7, top_p=0.9, seed=0))
    next_id = sampler.sample(logits, history=ids)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pullweights.errors import ComputeError

__all__ = ["Sampler", "SamplingParams", "StopMatcher"]


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens and when to stop.

    Attributes:
        temperature: 0 picks the most likely token (greedy); higher flattens the distribution.
        top_k: keep only the ``top_k`` most likely tokens (0: all).
        top_p: keep the smallest set of most likely tokens whose probability reaches ``top_p``
            (1: all).
        repetition_penalty: > 1 discourages tokens already in the history: their positive
            logits are divided by it, negative ones multiplied (llama.cpp, Hugging Face).
        repetition_window: how many of the latest history tokens the penalty looks at
            (0: the whole history).
        seed: seed of the random draws; ``None`` draws a fresh seed.
        max_tokens: at most this many tokens are generated.
        stop: generation stops before any of these strings.
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    repetition_window: int = 0
    seed: int | None = None
    max_tokens: int = 256
    stop: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Check the ranges; raise :class:`ComputeError` naming the bad field."""
        checks = (
            ("temperature", self.temperature >= 0 and np.isfinite(self.temperature), ">= 0"),
            ("top_k", self.top_k >= 0, ">= 0"),
            ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
            (
                "repetition_penalty",
                self.repetition_penalty > 0 and np.isfinite(self.repetition_penalty),
                "> 0",
            ),
            ("repetition_window", self.repetition_window >= 0, ">= 0"),
            ("max_tokens", self.max_tokens >= 0, ">= 0"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ComputeError(
                    f"SamplingParams.{name} = {getattr(self, name)!r}: must be {expected}"
                )
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ComputeError(f"SamplingParams.stop = {self.stop!r}: must be non-empty strings")

    @property
    def greedy(self) -> bool:
        """Whether sampling reduces to taking the largest logit."""
        return self.temperature == 0 or self.top_k == 1


class Sampler:
    """Draws token ids from logits according to :class:`SamplingParams`.

    One sampler owns one random generator: the same seed, logits and history give the same
    ids.
    """

    def __init__(self, params: SamplingParams | None = None) -> None:
        """Sample with ``params`` (greedy when ``None``)."""
        self.params = params if params is not None else SamplingParams()
        self._rng = np.random.default_rng(self.params.seed)

    def sample(self, logits: npt.ArrayLike, history: Sequence[int] = ()) -> int:
        """The next token id.

        Args:
            logits: float scores of one position, shape ``(vocab,)``.
            history: ids generated or given so far (for the repetition penalty).

        Raises:
            ComputeError: ``logits`` is not a non-empty 1-D array or holds NaN.
        """
        scores = self._penalized(_as_logits(logits), history)
        params = self.params
        if params.greedy:
            return int(np.argmax(scores))
        ids, probs = self.distribution_of(scores)
        pick = int(np.searchsorted(np.cumsum(probs), self._rng.random() * probs.sum(), "right"))
        return int(ids[min(pick, len(ids) - 1)])

    def distribution(
        self, logits: npt.ArrayLike, history: Sequence[int] = ()
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
        """The candidate ids and their probabilities that :meth:`sample` draws from.

        Ids are sorted by decreasing probability; the probabilities sum to 1. With greedy
        params it is the single best id.
        """
        scores = self._penalized(_as_logits(logits), history)
        if self.params.greedy:
            return np.array([np.argmax(scores)], dtype=np.intp), np.ones(1)
        return self.distribution_of(scores)

    def distribution_of(
        self, scores: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
        """Temperature, top-k and top-p applied to already penalized ``scores``."""
        params = self.params
        vocab = scores.shape[0]
        if 0 < params.top_k < vocab:
            ids = np.argpartition(scores, vocab - params.top_k)[vocab - params.top_k :]
        else:
            ids = np.arange(vocab, dtype=np.intp)
        values = scores[ids].astype(np.float64) / params.temperature
        order = np.argsort(-values, kind="stable")
        ids, values = ids[order], values[order]
        if not np.isfinite(values[0]):
            raise ComputeError(f"the largest logit is {values[0]}: no finite distribution")
        probs = np.exp(values - values[0])
        probs /= probs.sum()
        if params.top_p < 1.0:
            keep = int(np.searchsorted(np.cumsum(probs), params.top_p, "left")) + 1
            ids, probs = ids[:keep], probs[:keep]
            probs = probs / probs.sum()
        return ids.astype(np.intp, copy=False), probs

    def _penalized(
        self, logits: npt.NDArray[np.float32], history: Sequence[int]
    ) -> npt.NDArray[np.float32]:
        penalty = self.params.repetition_penalty
        if penalty == 1.0 or len(history) == 0:
            return logits
        window = self.params.repetition_window
        seen = np.asarray(history[-window:] if window else history, dtype=np.int64)
        seen = np.unique(seen[(seen >= 0) & (seen < logits.shape[0])])
        out = logits.copy()
        values = out[seen]
        out[seen] = np.where(values > 0, values / penalty, values * penalty)
        return out


class StopMatcher:
    """Finds stop strings in streamed text, holding back what could begin one.

    ``push`` returns the text that is safe to show; once a stop string is complete it returns
    the text before it and :attr:`stopped` becomes true.

    Example::

        matcher = StopMatcher(["\\nUser:"])
        shown = matcher.push("Hello\\nUs")   # "Hello"
        shown += matcher.push("er: hi")      # "" and matcher.stopped
    """

    def __init__(self, stop: Sequence[str]) -> None:
        """Watch for the strings in ``stop``."""
        self._stop = [s for s in stop if s]
        self._held = ""
        self.stopped = False

    def push(self, text: str) -> str:
        """Add generated text; return what can be shown now."""
        if self.stopped:
            return ""
        self._held += text
        cut = min((i for s in self._stop if (i := self._held.find(s)) >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            shown, self._held = self._held[:cut], ""
            return shown
        hold = max((_overlap(self._held, s) for s in self._stop), default=0)
        shown = self._held[: len(self._held) - hold]
        self._held = self._held[len(shown) :]
        return shown

    def flush(self) -> str:
        """End of generation: the held-back text (it did not become a stop string)."""
        held, self._held = ("" if self.stopped else self._held), ""
        return held


def _overlap(text: str, stop: str) -> int:
    """Length of the longest end of ``text`` that is a proper beginning of ``stop``."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0


def _as_logits(logits: npt.ArrayLike) -> npt.NDArray[np.float32]:
    array = np.asarray(logits, dtype=np.float32)
    if array.ndim != 1 or array.shape[0] == 0:
        raise ComputeError(f"logits must be a non-empty 1-D array, got shape {array.shape}")
    if np.isnan(array).any():
        raise ComputeError("logits hold NaN")
    return array
