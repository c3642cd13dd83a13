"""Load events: what pullweights is doing, since when, and with how many bytes.

Every layer reports its work here as *spans* (a ``begin`` and an ``end`` event sharing an
id) and *marks* (one instant). The CLI's progress bar, the profiler
(:mod:`pullweights.profile`) and user code subscribe; nothing is recorded when nobody
listens, so emitting costs one attribute check.

================ ===================================================================
phase            a span of
================ ===================================================================
``load``         one whole load (``nbytes``: the bytes of every payload to pull)
``header``       parsing a GGUF header (``name``: the file or URL)
``fetch``        reading one payload's bytes from its source (file, parts, HTTP)
``transform``    one payload's layout transform (``name``: the weight)
``cache-write``  writing one payload's transformed parts into the cache
``compile``      creating one stage's onnxruntime session (``stage``: its name)
``save``         saving one stage's session (prepacked weights) into the cache
``tokenizer``    building a tokenizer from GGUF metadata
``prefill``      running a prompt through the model
``generate``     one generation, prompt to last token
================ ===================================================================

Marks: ``ready`` (``name`` ``"graph"``: a compiled graph can compute; ``"model"``: a
language model is loaded, tokenizer and warm-up included), ``first-token``, ``retry`` (an
HTTP request is retried: ``name`` says why), ``stall`` (an HTTP request has received nothing
for a while; repeated while it lasts).

Events come from the event loop and from worker threads; a subscriber must be quick and
thread-safe. With ``PULLWEIGHTS_EVENTS=PATH`` in the environment every event is also
appended to ``PATH`` as one JSON line, so a profiler in another process (``pullweights
profile -- CMD``) sees the phases of a program it did not write. Times are
``time.monotonic()`` seconds, a clock shared by every process of the machine.

Example::

    with pullweights.events.subscribed(print):
        graph = await builder.build(outputs)
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Literal, TextIO

__all__ = [
    "ENV_EVENTS",
    "Event",
    "Phase",
    "Progress",
    "ProgressCallback",
    "Span",
    "Subscriber",
    "emit",
    "listening",
    "mark",
    "span",
    "subscribe",
    "subscribed",
]

#: Environment variable naming a file every event is appended to (JSON lines).
ENV_EVENTS = "PULLWEIGHTS_EVENTS"


class Phase(StrEnum):
    """What a span or mark is about (see the module docs)."""

    LOAD = "load"
    HEADER = "header"
    FETCH = "fetch"
    TRANSFORM = "transform"
    CACHE_WRITE = "cache-write"
    COMPILE = "compile"
    SAVE = "save"
    TOKENIZER = "tokenizer"
    PREFILL = "prefill"
    GENERATE = "generate"
    READY = "ready"
    FIRST_TOKEN = "first-token"
    RETRY = "retry"
    STALL = "stall"


Kind = Literal["begin", "end", "mark"]


@dataclass(frozen=True, slots=True)
class Event:
    """One event. ``span`` pairs a ``begin`` with its ``end`` (0 for marks)."""

    phase: Phase
    kind: Kind
    name: str
    #: Bytes the span moves (payload bytes for fetch/transform/cache-write, weight bytes
    #: of a stage for compile/save); 0 when it does not apply.
    nbytes: int
    #: ``time.monotonic()`` when it happened.
    time: float
    span: int = 0
    #: The stage this work belongs to, if any (``"layers 0-5"``).
    stage: str = ""
    #: For ``end``: False when the span ended with an error or was cancelled.
    ok: bool = True
    #: The emitting process (a profiler may follow several).
    pid: int = 0

    def to_json(self) -> str:
        """One JSON object on one line."""
        doc = asdict(self)
        doc["phase"] = str(self.phase)
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> Event:
        """Parse :meth:`to_json` output.

        Raises:
            ValueError: not an event line.
        """
        try:
            doc: dict[str, Any] = json.loads(line)
            return cls(
                phase=Phase(doc["phase"]),
                kind=doc["kind"],
                name=str(doc["name"]),
                nbytes=int(doc["nbytes"]),
                time=float(doc["time"]),
                span=int(doc.get("span", 0)),
                stage=str(doc.get("stage", "")),
                ok=bool(doc.get("ok", True)),
                pid=int(doc.get("pid", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an event: {line[:200]!r} ({exc})") from None


Subscriber = Callable[[Event], object]


@dataclass(frozen=True)
class Progress:
    """Progress of one load, given to a ``progress`` callback after every weight pulled:
    payloads and bytes done out of the total, seconds since the load began."""

    what: str
    done: int
    total: int
    bytes_done: int
    bytes_total: int
    elapsed: float


#: A ``progress=`` callback (it may also be a coroutine function).
ProgressCallback = Callable[[Progress], object]

_lock = threading.Lock()
_subscribers: tuple[Subscriber, ...] = ()
_ids = itertools.count(1)
_file: TextIO | None = None
_file_path: str | None = None


def _env_sink() -> TextIO | None:
    """The ``PULLWEIGHTS_EVENTS`` file of this process, opened on first use."""
    global _file, _file_path
    path = os.environ.get(ENV_EVENTS)
    if not path:
        return None
    if _file is None or _file_path != path:
        with _lock:
            if _file is None or _file_path != path:
                try:
                    _file = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
                    _file_path = path
                except OSError:
                    os.environ.pop(ENV_EVENTS, None)  # unusable: stop trying
                    return None
    return _file


def listening() -> bool:
    """True when an event would reach anyone (a subscriber or the events file)."""
    return bool(_subscribers) or bool(os.environ.get(ENV_EVENTS))


def emit(event: Event) -> None:
    """Deliver ``event`` to every subscriber and the events file. Subscriber errors are
    swallowed: reporting never breaks a load."""
    for subscriber in _subscribers:
        with contextlib.suppress(Exception):
            subscriber(event)
    sink = _env_sink()
    if sink is not None:
        with contextlib.suppress(OSError, ValueError):
            sink.write(event.to_json() + "\n")


def _event(
    phase: Phase, kind: Kind, name: str, nbytes: int, span: int, stage: str, ok: bool
) -> Event:
    return Event(phase, kind, name, nbytes, time.monotonic(), span, stage, ok, os.getpid())


def mark(phase: Phase, name: str = "", nbytes: int = 0, *, stage: str = "") -> None:
    """Emit an instant event."""
    if listening():
        emit(_event(phase, "mark", name, nbytes, 0, stage, True))


class Span:
    """An open span; set :attr:`nbytes` before it ends when the size is only known then."""

    __slots__ = ("id", "name", "nbytes", "phase", "stage")

    def __init__(self, phase: Phase, name: str, nbytes: int, stage: str) -> None:
        self.phase, self.name, self.nbytes, self.stage = phase, name, nbytes, stage
        self.id = next(_ids)


@contextlib.contextmanager
def span(
    phase: Phase,
    name: str = "",
    nbytes: int = 0,
    *,
    stage: str = "",
    ok_on: tuple[type[BaseException], ...] = (),
) -> Iterator[Span]:
    """Emit ``begin`` now and ``end`` when the block exits (``ok=False`` on any exception,
    cancellation included, except those in ``ok_on`` — e.g. ``GeneratorExit`` for a
    generator its consumer stops early). The ``end`` event carries the span's final
    ``nbytes``."""
    s = Span(phase, name, nbytes, stage)
    if not listening():
        yield s
        return
    emit(_event(phase, "begin", name, nbytes, s.id, stage, True))
    ok = False
    try:
        yield s
        ok = True
    except ok_on:
        ok = True
        raise
    finally:
        emit(_event(phase, "end", name, s.nbytes, s.id, stage, ok))


def subscribe(subscriber: Subscriber) -> Callable[[], None]:
    """Call ``subscriber(event)`` for every event from now on; returns the function that
    unsubscribes it."""
    global _subscribers
    with _lock:
        _subscribers = (*_subscribers, subscriber)

    def unsubscribe() -> None:
        global _subscribers
        with _lock:
            items = list(_subscribers)
            if subscriber in items:
                items.remove(subscriber)
            _subscribers = tuple(items)

    return unsubscribe


@contextlib.contextmanager
def subscribed(subscriber: Subscriber) -> Iterator[None]:
    """``subscribe`` for the duration of a block."""
    unsubscribe = subscribe(subscriber)
    try:
        yield
    finally:
        unsubscribe()
