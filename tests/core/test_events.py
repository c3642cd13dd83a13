"""Load events: spans, marks, subscribers and the events file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pullweights import events
from pullweights.events import Event, Phase


def test_span_pairs_begin_and_end() -> None:
    seen: list[Event] = []
    with events.subscribed(seen.append):
        with events.span(Phase.TRANSFORM, "blk.0.w", 123, stage="layers 0-3"):
            pass
        events.mark(Phase.READY, "graph")
    assert [(e.phase, e.kind) for e in seen] == [
        (Phase.TRANSFORM, "begin"),
        (Phase.TRANSFORM, "end"),
        (Phase.READY, "mark"),
    ]
    begin, end, _ = seen
    assert begin.span == end.span != 0
    assert end.ok and end.nbytes == 123 and end.stage == "layers 0-3"
    assert begin.time <= end.time
    assert begin.pid == os.getpid()


def test_failed_span_ends_not_ok_and_reraises() -> None:
    seen: list[Event] = []
    with events.subscribed(seen.append), pytest.raises(KeyError), events.span(Phase.FETCH, "x"):
        raise KeyError("boom")
    assert [e.kind for e in seen] == ["begin", "end"]
    assert not seen[1].ok


def test_unsubscribed_and_failing_subscribers() -> None:
    seen: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("subscriber bug")

    unsubscribe = events.subscribe(seen.append)
    with events.subscribed(broken):
        events.mark(Phase.RETRY, "503")  # the broken subscriber does not stop delivery
    unsubscribe()
    events.mark(Phase.RETRY, "again")
    assert [e.name for e in seen] == ["503"]


def test_threads_deliver_every_event() -> None:
    seen: list[Event] = []
    lock = threading.Lock()

    def add(event: Event) -> None:
        with lock:
            seen.append(event)

    def work(i: int) -> None:
        for j in range(50):
            with events.span(Phase.TRANSFORM, f"{i}.{j}"):
                pass

    with events.subscribed(add):
        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(seen) == 4 * 50 * 2
    assert len({e.span for e in seen}) == 200


def test_events_file_from_another_process(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    code = (
        "from pullweights import events\n"
        "with events.span(events.Phase.COMPILE, 'stage 0', 10, stage='embedding'):\n"
        "    pass\n"
        "events.mark(events.Phase.READY)\n"
    )
    env = {**os.environ, events.ENV_EVENTS: str(path)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    lines = path.read_text().splitlines()
    parsed = [Event.from_json(line) for line in lines]
    assert [(e.phase, e.kind) for e in parsed] == [
        (Phase.COMPILE, "begin"),
        (Phase.COMPILE, "end"),
        (Phase.READY, "mark"),
    ]
    assert parsed[0].stage == "embedding" and json.loads(lines[0])["phase"] == "compile"


def test_from_json_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not an event"):
        Event.from_json('{"phase": "nope"}')
    with pytest.raises(ValueError, match="not an event"):
        Event.from_json("[1, 2")


def test_ok_on_counts_a_generator_stopped_early_as_ok() -> None:
    seen: list[Event] = []

    def gen():  # type: ignore[no-untyped-def]
        with events.span(Phase.GENERATE, "g", ok_on=(GeneratorExit,)):
            yield 1
            yield 2

    with events.subscribed(seen.append):
        g = gen()
        next(g)
        g.close()
    assert [(e.kind, e.ok) for e in seen] == [("begin", True), ("end", True)]
