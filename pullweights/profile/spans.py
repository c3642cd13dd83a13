"""Spans and marks rebuilt from a stream of :mod:`pullweights.events`.

A ``begin`` and its ``end`` (same process, same span id) make one :class:`Span`, whose
bytes are those of the ``end`` (a span may learn its size only as it ends); a span
with no ``end`` (the process failed, was killed, or the profile stopped first) ends at the
end of the profile and counts as not ok. ``end`` events with no ``begin`` are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pullweights.events import Event, Phase

__all__ = ["WEIGHT_PHASES", "Mark", "Span", "active_at", "pair_events", "union_seconds"]

#: Phases that handle one weight payload each (``name`` is the weight).
WEIGHT_PHASES = frozenset({Phase.FETCH, Phase.TRANSFORM, Phase.CACHE_WRITE})


@dataclass(frozen=True)
class Span:
    """One piece of work, from ``start`` to ``end`` (``time.monotonic()`` seconds)."""

    phase: Phase
    name: str
    nbytes: int
    start: float
    end: float
    stage: str = ""
    ok: bool = True
    #: False when no ``end`` event was seen.
    finished: bool = True
    pid: int = 0

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def active_at(self, t: float) -> bool:
        """True when the span had begun at ``t`` and not yet ended."""
        return self.start <= t <= self.end


@dataclass(frozen=True)
class Mark:
    """One instant event."""

    phase: Phase
    name: str
    time: float
    nbytes: int = 0
    stage: str = ""
    pid: int = 0


def pair_events(events: Iterable[Event], end_time: float) -> tuple[list[Span], list[Mark]]:
    """Spans (ordered by start) and marks (by time) from ``events``; unfinished spans end
    at ``end_time``."""
    open_spans: dict[tuple[int, int], Event] = {}
    spans: list[Span] = []
    marks: list[Mark] = []
    for event in events:
        key = (event.pid, event.span)
        if event.kind == "mark":
            marks.append(
                Mark(event.phase, event.name, event.time, event.nbytes, event.stage, event.pid)
            )
        elif event.kind == "begin":
            open_spans[key] = event
        else:
            begin = open_spans.pop(key, None)
            if begin is not None:
                # The end carries the final size (a span may learn it only as it ends).
                nbytes = event.nbytes or begin.nbytes
                spans.append(_span(begin, event.time, ok=event.ok, finished=True, nbytes=nbytes))
    for begin in open_spans.values():
        spans.append(_span(begin, max(end_time, begin.time), ok=False, finished=False))
    spans.sort(key=lambda s: s.start)
    marks.sort(key=lambda m: m.time)
    return spans, marks


def _span(begin: Event, end: float, *, ok: bool, finished: bool, nbytes: int | None = None) -> Span:
    return Span(
        begin.phase,
        begin.name,
        begin.nbytes if nbytes is None else nbytes,
        begin.time,
        end,
        begin.stage,
        ok,
        finished,
        begin.pid,
    )


def active_at(spans: Iterable[Span], t: float) -> list[Span]:
    """The spans that had begun and not ended at ``t``."""
    return [s for s in spans if s.active_at(t)]


def union_seconds(spans: Iterable[Span]) -> float:
    """Seconds covered by at least one of ``spans`` (overlaps counted once)."""
    total = 0.0
    current_start: float | None = None
    current_end = 0.0
    for s in sorted(spans, key=lambda s: s.start):
        if current_start is None or s.start > current_end:
            if current_start is not None:
                total += current_end - current_start
            current_start, current_end = s.start, s.end
        else:
            current_end = max(current_end, s.end)
    if current_start is not None:
        total += current_end - current_start
    return total
