"""What a profile says: per-phase time, bytes, throughput and memory added, and the peaks.

Per phase (one row per phase; ``compile`` and ``save`` get one row per stage or session):

* ``busy_seconds``: the time at least one span of the phase was running (concurrent
  fetches count once), from ``start`` (first begin) to ``end`` (last end);
* ``nbytes`` and ``gb_per_s`` (``nbytes / busy_seconds``, 10^9 bytes per second);
* ``private_added`` / ``rss_added``: memory at the last end minus memory at the first
  begin (phases overlap, so these are not additive).

At the highest sample of private memory and of RSS, a :class:`Peak` lists the phases
that were active and the weights in flight: every fetch / transform / cache-write span
that had begun but not ended then, by weight name, with its bytes. The same can be asked
for the highest sample taken while weights were being pulled (``during``), when the
overall peak falls elsewhere (in a first compute, say).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

from pullweights.events import Phase
from pullweights.profile.samples import Kind, Samples
from pullweights.profile.spans import WEIGHT_PHASES, Span, active_at, union_seconds

__all__ = [
    "COUNTS_TOKENS",
    "PULLING",
    "AliveWeight",
    "Peak",
    "PhaseSummary",
    "find_peak",
    "summarize_phases",
]

#: Phases whose ``nbytes`` count tokens, not bytes (the loaders' prefill: prompt tokens).
COUNTS_TOKENS = frozenset({Phase.PREFILL, Phase.GENERATE, Phase.FIRST_TOKEN})
#: The phases during which weights are being pulled.
PULLING = frozenset({Phase.FETCH, Phase.TRANSFORM, Phase.CACHE_WRITE})

_PER_STAGE = frozenset({Phase.COMPILE, Phase.SAVE})


@dataclass(frozen=True)
class PhaseSummary:
    """One phase (or one stage of ``compile``/``save``); times in seconds from the start."""

    phase: str
    stage: str
    spans: int
    start: float
    end: float
    busy_seconds: float
    nbytes: int
    private_added: int
    rss_added: int
    #: Spans that ended with an error, were cancelled, or never ended.
    failed: int = 0

    @property
    def counts_tokens(self) -> bool:
        """True when :attr:`nbytes` counts tokens (prefill, generate)."""
        return Phase(self.phase) in COUNTS_TOKENS

    @property
    def gb_per_s(self) -> float | None:
        """Throughput over the busy time, 10^9 bytes/s (None without bytes or time, and
        for phases that count tokens)."""
        if self.nbytes <= 0 or self.busy_seconds <= 0 or self.counts_tokens:
            return None
        return self.nbytes / self.busy_seconds / 1e9

    @property
    def label(self) -> str:
        return f"{self.phase} ({self.stage})" if self.stage else self.phase


@dataclass(frozen=True)
class AliveWeight:
    """A weight whose bytes were being fetched, transformed or written at a peak."""

    name: str
    phases: tuple[str, ...]
    nbytes: int


@dataclass(frozen=True)
class Peak:
    """The highest sample of one kind of memory and what was going on then."""

    kind: Kind
    nbytes: int
    #: Seconds from the start of the profile.
    time: float
    phases: tuple[str, ...] = ()
    weights: tuple[AliveWeight, ...] = field(default=())

    @property
    def weights_nbytes(self) -> int:
        return sum(w.nbytes for w in self.weights)


def _group_key(span: Span) -> tuple[str, str]:
    if span.phase in _PER_STAGE:
        return str(span.phase), span.stage or span.name
    return str(span.phase), ""


def summarize_phases(spans: Sequence[Span], samples: Samples, origin: float) -> list[PhaseSummary]:
    """One :class:`PhaseSummary` per phase (and per compile/save stage), by first start."""
    groups: dict[tuple[str, str], list[Span]] = {}
    for span in spans:
        groups.setdefault(_group_key(span), []).append(span)
    rows = []
    for (phase, stage), members in groups.items():
        start = min(s.start for s in members)
        end = max(s.end for s in members)
        rows.append(
            PhaseSummary(
                phase=phase,
                stage=stage,
                spans=len(members),
                start=start - origin,
                end=end - origin,
                busy_seconds=union_seconds(members),
                nbytes=sum(s.nbytes for s in members),
                private_added=samples.at("private", end) - samples.at("private", start),
                rss_added=samples.at("rss", end) - samples.at("rss", start),
                failed=sum(1 for s in members if not s.ok),
            )
        )
    rows.sort(key=lambda r: r.start)
    return rows


def _merged(spans: Sequence[Span]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for s in sorted(spans, key=lambda s: s.start):
        if merged and s.start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], s.end))
        else:
            merged.append((s.start, s.end))
    return merged


def find_peak(
    kind: Kind,
    samples: Samples,
    spans: Sequence[Span],
    origin: float,
    *,
    during: frozenset[Phase] | None = None,
) -> Peak | None:
    """The peak of ``kind`` with the phases and weights active at it; with ``during``,
    the highest sample taken while a span of one of those phases ran. None: no sample."""
    column = samples.column(kind)
    if during is None:
        index = samples.peak_index(kind)
    else:
        windows = _merged([s for s in spans if s.phase in during])
        starts = [w[0] for w in windows]
        index = None
        for i, t in enumerate(samples.time):
            w = bisect.bisect_right(starts, t) - 1
            if w >= 0 and t <= windows[w][1] and (index is None or column[i] > column[index]):
                index = i
    if index is None:
        return None
    t = samples.time[index]
    alive = active_at(spans, t)
    phases = tuple(dict.fromkeys(str(s.phase) for s in alive))
    weights: dict[str, tuple[list[str], int]] = {}
    for s in alive:
        if s.phase in WEIGHT_PHASES:
            names, nbytes = weights.get(s.name, ([], 0))
            if str(s.phase) not in names:
                names.append(str(s.phase))
            weights[s.name] = (names, max(nbytes, s.nbytes))
    listed = sorted(
        (AliveWeight(name, tuple(p), n) for name, (p, n) in weights.items()),
        key=lambda w: (-w.nbytes, w.name),
    )
    return Peak(kind, column[index], t - origin, phases, tuple(listed))
