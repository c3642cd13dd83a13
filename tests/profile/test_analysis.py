"""Spans from events, per-phase summaries and what was alive at a peak (synthetic data)."""

from __future__ import annotations

import pytest

from pullweights.events import Event, Phase
from pullweights.profile.analysis import PULLING, find_peak, summarize_phases
from pullweights.profile.samples import Samples
from pullweights.profile.spans import pair_events, union_seconds

MIB = 2**20
T0 = 1000.0


def _ev(
    phase: Phase,
    kind: str,
    t: float,
    span: int,
    name: str = "",
    nbytes: int = 0,
    ok: bool = True,
    stage: str = "",
    pid: int = 7,
) -> Event:
    return Event(phase, kind, name, nbytes, T0 + t, span, stage, ok, pid)  # type: ignore[arg-type]


def _samples(private: list[int], rss: list[int]) -> Samples:
    s = Samples()
    for i, (p, r) in enumerate(zip(private, rss, strict=True)):
        s.append(T0 + i * 0.1, r * MIB, p * MIB, 0, 1)
    return s


# 0.0-1.0 load; fetch a 0.1-0.4, fetch b 0.2-0.5 (overlapping), transform a 0.4-0.7
# (still running at the private peak, 0.6), cache-write a 0.65-? (never ends).
EVENTS = [
    _ev(Phase.LOAD, "begin", 0.0, 1, "model", 300 * MIB),
    _ev(Phase.FETCH, "begin", 0.1, 2, "a", 100 * MIB),
    _ev(Phase.FETCH, "begin", 0.2, 3, "b", 200 * MIB),
    _ev(Phase.FETCH, "end", 0.4, 2, "a", 100 * MIB),
    _ev(Phase.TRANSFORM, "begin", 0.4, 4, "a", 100 * MIB),
    _ev(Phase.FETCH, "end", 0.5, 3, "b", 200 * MIB),
    _ev(Phase.TRANSFORM, "end", 0.7, 4, "a", 100 * MIB),
    _ev(Phase.CACHE_WRITE, "begin", 0.55, 5, "a", 100 * MIB),
    _ev(Phase.COMPILE, "begin", 0.3, 6, "", 50 * MIB, stage="layers 0-1"),
    _ev(Phase.COMPILE, "end", 0.8, 6, "", 50 * MIB, ok=False, stage="layers 0-1"),
    _ev(Phase.LOAD, "end", 1.0, 1, "model", 300 * MIB),
    _ev(Phase.READY, "mark", 1.0, 0, "model"),
    _ev(Phase.FETCH, "end", 0.9, 99, "orphan"),  # an end without begin is ignored
]
#                0   .1  .2  .3  .4  .5   .6  .7  .8  .9  1.0
PRIVATE = [10, 20, 40, 60, 80, 90, 120, 70, 50, 40, 30]
RSS = [50, 60, 80, 110, 150, 200, 230, 240, 200, 150, 130]


def test_pairing_and_unfinished_spans() -> None:
    spans, marks = pair_events(EVENTS, end_time=T0 + 1.2)
    assert [m.phase for m in marks] == [Phase.READY]
    assert len(spans) == 6
    write = next(s for s in spans if s.phase == Phase.CACHE_WRITE)
    assert not write.finished and not write.ok and write.end == T0 + 1.2
    compile_ = next(s for s in spans if s.phase == Phase.COMPILE)
    assert compile_.finished and not compile_.ok
    fetches = [s for s in spans if s.phase == Phase.FETCH]
    assert union_seconds(fetches) == pytest.approx(0.4)  # 0.1-0.5, overlaps once
    assert sum(s.seconds for s in fetches) == pytest.approx(0.6)


def test_same_span_id_in_two_processes_is_two_spans() -> None:
    events = [
        _ev(Phase.FETCH, "begin", 0.0, 1, "x", pid=1),
        _ev(Phase.FETCH, "begin", 0.1, 1, "y", pid=2),
        _ev(Phase.FETCH, "end", 0.2, 1, "x", pid=1),
        _ev(Phase.FETCH, "end", 0.4, 1, "y", pid=2),
    ]
    spans, _ = pair_events(events, T0 + 1)
    assert sorted((s.name, round(s.seconds, 6)) for s in spans) == [("x", 0.2), ("y", 0.3)]


def test_phase_summary() -> None:
    spans, _ = pair_events(EVENTS, end_time=T0 + 1.0)
    rows = {r.label: r for r in summarize_phases(spans, _samples(PRIVATE, RSS), T0)}
    assert list(rows) == ["load", "fetch", "compile (layers 0-1)", "transform", "cache-write"]
    fetch = rows["fetch"]
    assert fetch.spans == 2 and fetch.nbytes == 300 * MIB
    assert fetch.start == pytest.approx(0.1) and fetch.end == pytest.approx(0.5)
    assert fetch.busy_seconds == pytest.approx(0.4)
    assert fetch.gb_per_s == pytest.approx(300 * MIB / 0.4 / 1e9)
    # private at 0.5 (90) minus at 0.1 (20); samples are looked up at or before a time
    assert fetch.private_added == pytest.approx((90 - 20) * MIB)
    assert fetch.rss_added == pytest.approx((200 - 60) * MIB)
    assert rows["compile (layers 0-1)"].failed == 1
    assert rows["cache-write"].failed == 1  # never ended
    assert rows["load"].gb_per_s is not None


def test_peak_lists_weights_in_flight() -> None:
    spans, _ = pair_events(EVENTS, end_time=T0 + 1.0)
    samples = _samples(PRIVATE, RSS)
    peak = find_peak("private", samples, spans, T0)
    assert peak is not None
    assert peak.nbytes == 120 * MIB and peak.time == pytest.approx(0.6)
    assert peak.phases == ("load", "compile", "transform", "cache-write")
    assert [(w.name, w.phases, w.nbytes) for w in peak.weights] == [
        ("a", ("transform", "cache-write"), 100 * MIB)
    ]
    rss_peak = find_peak("rss", samples, spans, T0)
    assert rss_peak is not None and rss_peak.time == pytest.approx(0.7)
    assert find_peak("rss", Samples(), spans, T0) is None


def test_samples_lookup() -> None:
    s = _samples(PRIVATE, RSS)
    assert s.at("private", T0 - 5) == PRIVATE[0] * MIB  # before the first: the first
    assert s.at("private", T0 + 0.25) == PRIVATE[2] * MIB
    assert s.at("file", T0 + 0.6) == (RSS[6] - PRIVATE[6]) * MIB
    assert s.rate_hz() == pytest.approx(10.0)
    assert Samples().at("rss", 0.0) == 0


def test_peak_while_pulling_when_the_overall_peak_is_elsewhere() -> None:
    events = [
        _ev(Phase.FETCH, "begin", 0.05, 1, "w", 64 * MIB),
        _ev(Phase.FETCH, "end", 0.15, 1, "w", 64 * MIB),
        _ev(Phase.GENERATE, "begin", 0.25, 2),
        _ev(Phase.GENERATE, "end", 0.35, 2),
    ]
    spans, _ = pair_events(events, T0 + 1)
    samples = _samples([10, 50, 20, 100], [20, 60, 30, 110])
    overall = find_peak("private", samples, spans, T0)
    assert overall is not None and overall.nbytes == 100 * MIB and overall.weights == ()
    pulling = find_peak("private", samples, spans, T0, during=PULLING)
    assert pulling is not None and pulling.nbytes == 50 * MIB
    assert pulling.time == pytest.approx(0.1) and [w.name for w in pulling.weights] == ["w"]
    assert find_peak("private", samples, [], T0, during=PULLING) is None
