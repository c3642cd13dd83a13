"""How a load shows on stderr: one bar on a terminal, a few plain lines otherwise.

A :class:`LoadReporter` subscribes to :mod:`pullweights.events` for the whole load and is
also the load's ``progress`` callback (one call per weight in place, cache hits included:
the events have no span for those):

* ``"bar"`` (stderr is a terminal): one tqdm bar over the bytes of every weight (the
  ``load`` span's ``nbytes``), its label the work going on now — ``header``, then
  ``fetch``, ``transform``, ``cache-write``, ``compile`` and ``save`` with their stage,
  then ``tokenizer`` — redrawn at least every :data:`REFRESH_SECONDS`, so the clock keeps
  running through compiles and the tokenizer and no step of the load is silent. Weights a
  saved session already holds are never pulled: the bar completes when the load ends.
* ``"log"`` (stderr is a file or a pipe): a line when the load starts (bytes of weights),
  one per phase when it ends (weights pulled, stages compiled and sessions saved, the
  tokenizer: counts, sizes, seconds) and one when the model is ready.
* ``"off"``: nothing.

Example::

    with LoadReporter("bar") as reporter:
        model = await load_model("gemma3-270m", progress=reporter.progress)
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TextIO

from tqdm import tqdm

from pullweights.events import Event, Phase, Progress, ProgressCallback, subscribe

__all__ = ["REFRESH_SECONDS", "LoadReporter", "ReportMode", "load_progress_bar", "report_mode"]

ReportMode = Literal["bar", "log", "off"]

#: The bar is redrawn at least this often, so its clock never stalls.
REFRESH_SECONDS = 0.25
MiB = 1024 * 1024

_WEIGHT_PHASES = (Phase.FETCH, Phase.TRANSFORM, Phase.CACHE_WRITE)
_SHOWN = (Phase.HEADER, *_WEIGHT_PHASES, Phase.COMPILE, Phase.SAVE, Phase.TOKENIZER)


def report_mode(*, enabled: bool = True, stream: TextIO | None = None) -> ReportMode:
    """``"bar"`` on a terminal, ``"log"`` elsewhere, ``"off"`` when not ``enabled``."""
    stream = stream or sys.stderr
    if not enabled:
        return "off"
    try:
        return "bar" if stream.isatty() else "log"
    except (AttributeError, ValueError):
        return "log"


@dataclass
class _PhaseTotals:
    """Spans of one phase: how many ended, their bytes, first begin to last end."""

    spans: int = 0
    nbytes: int = 0
    first: float | None = None
    last: float = 0.0
    stages: frozenset[str] = frozenset()  # stage names seen ("" included)

    def begin(self, event: Event) -> None:
        if self.first is None:
            self.first = event.time

    def end(self, event: Event) -> None:
        self.spans += 1
        self.nbytes += event.nbytes
        self.last = max(self.last, event.time)
        self.stages |= {event.stage}

    @property
    def seconds(self) -> float:
        return 0.0 if self.first is None else max(0.0, self.last - self.first)


class LoadReporter:
    """Reports one load on ``stream`` (default stderr) in ``mode``; use as a context manager
    (or call :meth:`close`) around the load, and pass :meth:`progress` as its callback."""

    def __init__(
        self, mode: ReportMode, *, what: str = "loading", stream: TextIO | None = None
    ) -> None:
        self.mode = mode
        self.what = what
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._begun: dict[Phase, float] = {}
        self._totals: dict[Phase, _PhaseTotals] = {}
        self._active: dict[int, str] = {}  # span id -> label, in begin order
        self._weights = (0, 0)  # (done, total)
        self._last_label = what
        self._load_ended = False
        self._bytes_total = 0
        self._closed = False
        self._bar: Any = None
        self._unsubscribe = None
        self._refresher: threading.Thread | None = None
        self._stop = threading.Event()
        if mode == "off":
            return
        if mode == "bar":
            self._bar = tqdm(
                total=0,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=what,
                file=self.stream,
                leave=False,
                dynamic_ncols=True,
                mininterval=REFRESH_SECONDS,
            )
            self._refresher = threading.Thread(
                target=self._refresh_loop, name="pullweights-progress", daemon=True
            )
            self._refresher.start()
        self._unsubscribe = subscribe(self._on_event)

    # -- the two inputs ---------------------------------------------------------------------

    def progress(self, event: Progress) -> None:
        """The load's ``progress`` callback: one weight more is in place."""
        with self._lock:
            self._weights = (event.done, max(event.total, event.done))
            self._bytes_total = max(self._bytes_total, event.bytes_total)
            if self._bar is not None:
                self._bar.total = max(self._bar.total or 0, event.bytes_total)
                self._bar.n = max(self._bar.n, event.bytes_done)
                self._bar.set_postfix_str(f"{event.done}/{event.total} weights", refresh=False)

    def _on_event(self, event: Event) -> None:
        with self._lock:
            if self._closed:
                return
            if event.phase == Phase.LOAD:
                self._on_load(event)
            elif event.phase in _SHOWN:
                self._on_span(event)

    def _on_load(self, event: Event) -> None:
        if event.kind == "begin":
            self._bytes_total = max(self._bytes_total, event.nbytes)
            self._begun[Phase.LOAD] = event.time
            if self._bar is not None:
                self._bar.total = max(self._bar.total or 0, event.nbytes)
                self._bar.refresh()
            else:
                self._line(f"{self.what}: {event.nbytes / MiB:.1f} MiB of weights")
        elif event.kind == "end":
            self._load_ended = True
            if self._bar is not None:
                done, total = self._weights
                if total > done:  # the rest is held by saved sessions
                    self._bar.set_postfix_str(
                        f"{done}/{total} weights, {total - done} in saved sessions", refresh=False
                    )
                self._bar.n = self._bar.total
                self._bar.set_description_str(self._label(), refresh=True)
            elif event.ok:
                # Saved sessions prefetched for this load began opening before it did.
                compiled = self._totals.get(Phase.COMPILE)
                begun = [self._begun.get(Phase.LOAD, event.time)]
                begun += [compiled.first] if compiled and compiled.first is not None else []
                self._log_phases(event.time - min(begun))

    def _on_span(self, event: Event) -> None:
        label = f"{event.phase} {event.stage}".strip()
        totals = self._totals.setdefault(event.phase, _PhaseTotals())
        if event.kind == "begin":
            self._active[event.span] = label
            totals.begin(event)
        elif event.kind == "end":
            self._active.pop(event.span, None)
            totals.end(event)
            if event.phase == Phase.TOKENIZER and self._bar is None and event.ok:
                self._line(f"tokenizer: built in {totals.seconds:.2f} s")
        if self._bar is not None:
            self._bar.set_description_str(self._label(), refresh=True)

    def _label(self) -> str:
        """The newest work in progress (``"compile layers 0-5"``); between two spans the
        last one's, so the label does not flicker; after the load, ``finishing``."""
        if self._active:
            self._last_label = next(reversed(self._active.values()))
        elif self._load_ended:
            self._last_label = "finishing"
        return self._last_label

    # -- output -----------------------------------------------------------------------------

    def note(self, text: str) -> None:
        """A line for the user (an adjustment, a warning), printed above the bar if one is
        shown, in every mode."""
        with self._lock:
            if self._bar is not None:
                self._bar.clear()
            self._line(text)
            if self._bar is not None:
                self._bar.refresh()

    def _line(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            print(f"pullweights: {text}", file=self.stream, flush=True)

    def _log_phases(self, load_seconds: float) -> None:
        done, total = self._weights
        weights = [self._totals[p] for p in _WEIGHT_PHASES if p in self._totals]
        if weights or done:
            pulled = self._totals.get(Phase.FETCH, _PhaseTotals()).nbytes
            transformed = self._totals.get(Phase.TRANSFORM, _PhaseTotals())
            first = min((t.first for t in weights if t.first is not None), default=0.0)
            last = max((t.last for t in weights), default=0.0)
            held = f" ({total - done} more inside saved sessions)" if total > done else ""
            self._line(
                f"weights: {done} of {total} pulled{held}; read {pulled / MiB:.1f} MiB, "
                f"transformed {transformed.spans} ({transformed.nbytes / MiB:.1f} MiB)"
                + (f" in {last - first:.2f} s" if weights else "")
            )
        compiled = self._totals.get(Phase.COMPILE)
        if compiled is not None:
            saved = self._totals.get(Phase.SAVE)
            stages = len(compiled.stages)
            extra = (
                f"; saved {saved.spans} session(s), {saved.nbytes / MiB:.1f} MiB prepacked, "
                f"in {saved.seconds:.2f} s"
                if saved is not None
                else ""
            )
            self._line(f"compile: {stages} stage(s) in {compiled.seconds:.2f} s{extra}")
        self._line(f"{self.what}: weights and stages ready in {load_seconds:.2f} s")

    def _refresh_loop(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS):
            with self._lock:
                if self._bar is not None and not self._closed:
                    self._bar.refresh()

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop listening and remove the bar (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join()
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> LoadReporter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def load_progress_bar(enabled: bool, desc: str = "loading") -> tuple[Any, ProgressCallback | None]:
    """A :class:`LoadReporter` bar (``(None, None)`` when not ``enabled``) and its progress
    callback; close the reporter when the load ends."""
    if not enabled:
        return None, None
    reporter = LoadReporter("bar", what=desc)
    return reporter, reporter.progress
