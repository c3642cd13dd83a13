"""A profile record: memory samples, load events, how the run ended; JSON in and out.

The record keeps only what was observed (samples, events, status, metadata); phases and
peaks are derived from it (:mod:`pullweights.profile.analysis`) and written into the
JSON as well, for readers that do not use pullweights.

Example::

    record = ProfileRecord.read_json("profile.json")
    print(record.peak("private"))
    record.write_markdown("profile.md")
    record.plot("profile.png")         # needs the plot extra
"""

from __future__ import annotations

import functools
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pullweights.events import Event, Phase
from pullweights.profile.analysis import (
    PULLING,
    Peak,
    PhaseSummary,
    find_peak,
    summarize_phases,
)
from pullweights.profile.samples import KINDS, Kind, Samples
from pullweights.profile.spans import Mark, Span, pair_events

__all__ = ["FORMAT", "ProfileRecord", "ProfileStatus", "run_metadata"]

#: ``format`` field of the JSON document.
FORMAT = "pullweights-profile/1"


def run_metadata(**extra: Any) -> dict[str, Any]:
    """Facts every record carries: date, host, CPUs, Python, pullweights version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        pw_version = version("pullweights")
    except PackageNotFoundError:
        pw_version = "unknown"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "pullweights": pw_version,
        **extra,
    }


@dataclass
class ProfileStatus:
    """How the profiled run ended."""

    #: Exit status of a profiled command (``128 + N`` when killed by signal N); None for
    #: a block of this process.
    exit_code: int | None = None
    #: The signal that ended the command, if one did.
    signal: int | None = None
    #: The run raised an error or exited with a non-zero status.
    failed: bool = False
    #: The run was interrupted (Ctrl-C, SIGTERM, cancellation).
    interrupted: bool = False
    #: What went wrong, in one line.
    error: str = ""

    @property
    def ok(self) -> bool:
        return not (self.failed or self.interrupted)

    def describe(self) -> str:
        """``"ok"``, ``"failed (exit status 3)"``, ``"interrupted (SIGINT)"``..."""
        if self.ok:
            return "ok" if self.exit_code is None else f"ok (exit status {self.exit_code})"
        what = "interrupted" if self.interrupted else "failed"
        details = []
        if self.exit_code is not None:
            details.append(f"exit status {self.exit_code}")
        if self.error:
            details.append(self.error)
        return f"{what} ({'; '.join(details)})" if details else what


@dataclass
class ProfileRecord:
    """Everything observed while profiling one run.

    Attributes:
        target: what was profiled (a command line, a model, a description).
        origin: ``time.monotonic()`` when profiling started; every time in the JSON and
            in the derived tables is in seconds from it.
        end: ``time.monotonic()`` when profiling stopped.
        samples: memory of the profiled process tree.
        events: load events, as emitted.
        status: how the run ended.
        metadata: free-form facts (start date, host, pid, sampler interval, kernel peak
            RSS of a command...).
    """

    target: str
    origin: float
    end: float
    samples: Samples
    events: list[Event] = field(default_factory=list)
    status: ProfileStatus = field(default_factory=ProfileStatus)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.end - self.origin

    @functools.cached_property
    def _paired(self) -> tuple[list[Span], list[Mark]]:
        return pair_events(self.events, self.end)

    @property
    def spans(self) -> list[Span]:
        """Every span, by start (times are ``time.monotonic()``)."""
        return self._paired[0]

    @property
    def marks(self) -> list[Mark]:
        """Every mark, by time (``time.monotonic()``)."""
        return self._paired[1]

    def mark_time(self, phase: Phase) -> float | None:
        """Seconds from the start to the first mark of ``phase`` (None if none)."""
        for mark in self.marks:
            if mark.phase == phase:
                return mark.time - self.origin
        return None

    @functools.cached_property
    def phases(self) -> list[PhaseSummary]:
        """Per-phase time, bytes, throughput and memory added."""
        return summarize_phases(self.spans, self.samples, self.origin)

    def peak(self, kind: Kind) -> Peak | None:
        """The highest sample of ``kind`` and what was active then (None: no samples)."""
        return find_peak(kind, self.samples, self.spans, self.origin)

    def pulling_peak(self, kind: Kind) -> Peak | None:
        """The highest sample of ``kind`` while weights were being fetched, transformed
        or written (None: no such sample)."""
        return find_peak(kind, self.samples, self.spans, self.origin, during=PULLING)

    # -- output -------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The JSON document (observations, then derived phases and peaks)."""
        events = []
        for e in self.events:
            doc = asdict(e)
            doc["phase"] = str(e.phase)
            doc["time"] = round(e.time - self.origin, 6)
            events.append(doc)
        peaks = {kind: self.peak(kind) for kind in KINDS}
        first_marks: dict[str, float] = {}
        for m in self.marks:
            first_marks.setdefault(str(m.phase), round(m.time - self.origin, 6))
        return {
            "format": FORMAT,
            "target": self.target,
            "origin_monotonic": self.origin,
            "duration_s": round(self.duration, 6),
            "status": asdict(self.status),
            "metadata": self.metadata,
            "samples": self.samples.to_json(self.origin),
            "events": events,
            "phases": [
                {**asdict(p), "gb_per_s": p.gb_per_s, "label": p.label} for p in self.phases
            ],
            "peaks": {k: asdict(p) for k, p in peaks.items() if p is not None},
            "pulling_peaks": {
                k: asdict(p) for k in ("private", "rss") if (p := self.pulling_peak(k)) is not None
            },
            "marks": first_marks,
        }

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_json` to ``path``; returns the path."""
        out = Path(path)
        out.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        return out

    def write_markdown(self, path: str | os.PathLike[str]) -> Path:
        """Write the markdown summary (:func:`~pullweights.profile.markdown.render`)."""
        from pullweights.profile.markdown import render

        out = Path(path)
        out.write_text(render(self), encoding="utf-8")
        return out

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Draw the timeline as a PNG (needs matplotlib: the ``plot`` extra).

        Raises:
            UnsupportedError: matplotlib is not installed.
        """
        from pullweights.profile.plot import plot_record

        return plot_record(self, path)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ProfileRecord:
        """Rebuild a record from :meth:`to_json` output (derived fields are recomputed).

        Raises:
            ValueError: not a profile record.
        """
        if doc.get("format") != FORMAT:
            raise ValueError(f"not a pullweights profile record (format {doc.get('format')!r})")
        try:
            origin = float(doc["origin_monotonic"])
            events = [
                Event.from_json(json.dumps({**e, "time": float(e["time"]) + origin}))
                for e in doc["events"]
            ]
            return cls(
                target=str(doc["target"]),
                origin=origin,
                end=origin + float(doc["duration_s"]),
                samples=Samples.from_json(doc["samples"], origin),
                events=events,
                status=ProfileStatus(**doc["status"]),
                metadata=dict(doc.get("metadata", {})),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a pullweights profile record ({exc})") from None

    @classmethod
    def read_json(cls, path: str | os.PathLike[str]) -> ProfileRecord:
        """Read a record written by :meth:`write_json`.

        Raises:
            ValueError: not a profile record; OSError: unreadable.
        """
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
