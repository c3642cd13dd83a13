"""Choosing the next token from logits: greedy, temperature, top-k, top-p, repetition penalty.

The order is Hugging Face's: repetition penalty on the raw logits, then temperature, then
top-k, then top-p (nucleus) on the probabilities that remain, then one seeded draw. Everything
is vectorised and nothing sorts the whole vocabulary unless it has to: top-k is a
``partition``, and top-p (or a draw without it) sorts only the likely ids, as many as it
takes for their cumulative probability to reach the mass it needs.

Example::

    sampler = Sampler(SamplingParams(temperature=0.7, top_p=0.9, seed=0))
    next_id = sampler.sample(logits, history=ids)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from pullweights.errors import ComputeError

__all__ = ["Sampler", "SamplingParams", "StopMatcher"]

_PROBABILITY_BOUNDS = (2.0**-8, 2.0**-14, 2.0**-20)
"""Top-p (and a draw) sort the ids at least this likely, in turn, before sorting them all."""


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
        """Check the types and ranges; raise :class:`ComputeError` naming the bad field."""
        numbers = {
            "temperature": float,
            "top_k": int,
            "top_p": float,
            "repetition_penalty": float,
            "repetition_window": int,
            "max_tokens": int,
        }
        for name, kind in numbers.items():
            value = getattr(self, name)
            allowed = (int, np.integer) if kind is int else (int, float, np.integer, np.floating)
            if isinstance(value, bool) or not isinstance(value, allowed):
                raise ComputeError(f"SamplingParams.{name} = {value!r}: must be a number")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise ComputeError(f"SamplingParams.seed = {self.seed!r}: must be an int or None")
        if isinstance(self.stop, str) or not isinstance(self.stop, (list, tuple)):
            raise ComputeError(f"SamplingParams.stop = {self.stop!r}: must be a list of strings")
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
        if self.params.greedy:
            return int(np.argmax(scores))
        if self.params.top_p < 1.0:
            nucleus, probs = self.distribution_of(scores)
            draw = self._rng.random() * probs.sum()
            pick = int(np.searchsorted(np.cumsum(probs), draw, "right"))
            return int(nucleus[min(pick, len(nucleus) - 1)])
        # The id where the sorted cumulative probability passes the draw: only the most
        # likely ids up to it are sorted, not the whole vocabulary.
        ids, values, probs = self._candidates(scores)
        draw = self._rng.random() * probs.sum()
        last = _sorted_prefix(values, probs, draw, "right")[-1]
        return int(last if ids is None else ids[last])

    def distribution(
        self, logits: npt.ArrayLike, history: Sequence[int] = ()
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
        """The candidate ids and their probabilities that :meth:`sample` draws from.

        Ids are sorted by decreasing probability (lower id first on ties); the probabilities
        sum to 1. With greedy params it is the single best id.
        """
        scores = self._penalized(_as_logits(logits), history)
        if self.params.greedy:
            return np.array([np.argmax(scores)], dtype=np.intp), np.ones(1)
        return self.distribution_of(scores)

    def distribution_of(
        self, scores: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
        """Temperature, top-k and top-p applied to already penalized ``scores``."""
        ids, values, probs = self._candidates(scores)
        if self.params.top_p < 1.0:
            keep = _sorted_prefix(values, probs, self.params.top_p, "left")
            kept = probs[keep]
            return _take(ids, keep), kept / kept.sum()
        order = np.argsort(-values, kind="stable")
        return _take(ids, order), probs[order]

    def _candidates(
        self, scores: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.intp] | None, npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """The ids top-k keeps (ascending; ``None``: all), their logits / temperature and
        probabilities."""
        params = self.params
        ids: npt.NDArray[np.intp] | None = None
        if 0 < params.top_k < scores.shape[0]:
            ids = _top_k(scores, params.top_k)
            values = scores[ids].astype(np.float64)
        else:
            values = scores.astype(np.float64)
        values /= params.temperature
        top = values.max()
        if not np.isfinite(top):
            raise ComputeError(f"the largest logit is {top}: no finite distribution")
        probs = values - top
        np.exp(probs, out=probs)
        probs /= probs.sum()
        return ids, values, probs

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


def _take(
    ids: npt.NDArray[np.intp] | None, positions: npt.NDArray[np.intp]
) -> npt.NDArray[np.intp]:
    """The ids at ``positions`` among the candidates (``None``: every id, at its own position)."""
    return positions if ids is None else ids[positions]


def _top_k(scores: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.intp]:
    """Ids of the ``k`` largest scores in ascending order (lower ids win ties), ``0 < k < n``."""
    threshold = np.partition(scores, scores.shape[0] - k)[scores.shape[0] - k]
    above = np.flatnonzero(scores > threshold)
    tied = np.flatnonzero(scores == threshold)[: k - above.size]
    return np.sort(np.concatenate([above, tied]))


def _sorted_prefix(
    values: npt.NDArray[np.float64],
    probs: npt.NDArray[np.float64],
    mass: float,
    side: Literal["left", "right"],
) -> npt.NDArray[np.intp]:
    """Positions of the shortest run of largest ``values`` whose ``probs`` add up to ``mass``.

    ``probs`` is the softmax of ``values`` (it sums to 1). Positions come by decreasing value,
    lower position first on ties, as a stable ``argsort(-values)`` orders them, and stop at the
    first whose cumulative probability is ``>= mass`` (``side="left"``) or ``> mass``
    (``"right"``); all of them if none is.

    Only the few likely positions are sorted: those with a probability of at least 2**-8
    (at most 256 of them, as probabilities sum to 1), then 2**-14, then 2**-20, then all.
    Such a set holds every position with a larger value than any of its members, so sorted it
    is exactly the start of the full order, and its cumulative sums are the same numbers.
    """
    for bound in _PROBABILITY_BOUNDS:
        likely = np.flatnonzero(probs >= bound)
        if likely.shape[0] == probs.shape[0]:
            break
        likely = likely[np.argsort(-values[likely], kind="stable")]
        cut = int(np.searchsorted(np.cumsum(probs[likely]), mass, side))
        if cut < likely.shape[0]:
            return likely[: cut + 1]
    order = np.argsort(-values, kind="stable")
    cut = int(np.searchsorted(np.cumsum(probs[order]), mass, side))
    return order[: cut + 1]


def _as_logits(logits: npt.ArrayLike) -> npt.NDArray[np.float32]:
    array = np.asarray(logits, dtype=np.float32)
    if array.ndim != 1 or array.shape[0] == 0:
        raise ComputeError(f"logits must be a non-empty 1-D array, got shape {array.shape}")
    if np.isnan(array).any():
        raise ComputeError("logits hold NaN")
    return array
