"""The PNG timeline of a profile: memory vs time, phases shaded and labelled, peaks marked.

The upper panel draws one line per kind of memory (RSS, private, file-backed; swap when
any was used), shades the long phases (load, header, compile, prefill...) and marks
``ready`` / ``first-token``; the lower panel has one lane per phase showing when any of
its spans ran (weights are fetched and transformed by the hundred, too many to shade
one by one). Needs matplotlib, the ``plot`` extra; without it :func:`require_matplotlib`
raises one clear error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pullweights.errors import UnsupportedError
from pullweights.events import Phase
from pullweights.profile.markdown import mark_label, mib
from pullweights.profile.samples import KINDS
from pullweights.profile.spans import WEIGHT_PHASES

if TYPE_CHECKING:
    from pullweights.profile.record import ProfileRecord

__all__ = ["INSTALL_HINT", "draw_memory", "plot_record", "require_matplotlib"]

INSTALL_HINT = 'pip install -e ".[plot]"'
COLORS = {"rss": "tab:blue", "private": "tab:red", "file": "tab:green", "swap": "tab:purple"}
LABELS = {"rss": "RSS", "private": "private", "file": "file-backed", "swap": "swap"}
#: Phases drawn only as lanes, never shaded over the memory lines (too many spans).
_LANE_ONLY = frozenset({*WEIGHT_PHASES, Phase.COMPILE, Phase.SAVE})
_PHASE_COLORS = {
    Phase.LOAD: "#cccccc",
    Phase.HEADER: "#ffd27f",
    Phase.FETCH: "#7fb2ff",
    Phase.TRANSFORM: "#ff9f7f",
    Phase.CACHE_WRITE: "#a3d9a5",
    Phase.COMPILE: "#c7a3ff",
    Phase.SAVE: "#e0c0e0",
    Phase.TOKENIZER: "#fff07f",
    Phase.PREFILL: "#7fe0e0",
    Phase.GENERATE: "#b0e0b0",
}


def require_matplotlib() -> Any:
    """The ``matplotlib.figure.Figure`` class.

    Raises:
        UnsupportedError: matplotlib is not installed (the message says how to install it).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UnsupportedError(
            f"plotting needs matplotlib, which is not installed: {INSTALL_HINT}"
        ) from None
    return Figure


def draw_memory(ax: Any, record: ProfileRecord, *, kinds: tuple[str, ...] = KINDS) -> None:
    """Draw the memory lines of ``record`` (MiB vs seconds) and its marks on ``ax``."""
    samples = record.samples
    times = [t - record.origin for t in samples.time]
    for kind in kinds:
        values = samples.column(kind)  # type: ignore[arg-type]
        if kind == "swap" and not any(values):
            continue
        ax.plot(times, [v / 2**20 for v in values], color=COLORS[kind], label=LABELS[kind], lw=1.3)
    seen: set[tuple[str, str]] = set()
    for mark in record.marks:
        if (mark.phase, mark.name) in seen:
            continue
        seen.add((mark.phase, mark.name))
        label = mark_label(str(mark.phase), mark.name)
        t = mark.time - record.origin
        ax.axvline(t, color="black", ls="--", lw=0.8)
        ax.text(
            t,
            0.02,
            f" {label}",
            transform=ax.get_xaxis_transform(),
            rotation=90,
            va="bottom",
            ha="right",
            fontsize=7,
        )
    ax.set_ylabel("MiB")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)


def _shade_phases(ax: Any, record: ProfileRecord) -> None:
    """Shade the whole-run phases (load, header, tokenizer, prefill, generate); the
    per-weight and per-stage ones are in the lanes below. Labels only where they fit."""
    width = max(record.duration, 1e-9)
    for summary in record.phases:
        phase = Phase(summary.phase)
        if phase in _LANE_ONLY or summary.end <= summary.start:
            continue
        ax.axvspan(
            summary.start, summary.end, color=_PHASE_COLORS.get(phase, "#dddddd"), alpha=0.25, lw=0
        )
        if (summary.end - summary.start) / width >= 0.06:
            ax.text(
                (summary.start + summary.end) / 2,
                0.98,
                summary.label,
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="top",
                fontsize=8,
                color="#444444",
            )


def _annotate_peaks(ax: Any, record: ProfileRecord) -> None:
    for kind, dy in (("private", -30), ("rss", -18)):
        peak = record.peak(kind)  # type: ignore[arg-type]
        if peak is None or peak.nbytes <= 0:
            continue
        text = f"peak {LABELS[kind]} {mib(peak.nbytes)} at {peak.time:.2f} s"
        if peak.phases:
            text += f" ({', '.join(peak.phases)})"
        if peak.weights:
            n = len(peak.weights)
            text += f"\n{n} weight{'s' if n != 1 else ''} in flight, {mib(peak.weights_nbytes)}"
        y = peak.nbytes / 2**20
        ax.plot([peak.time], [y], "o", color=COLORS[kind], ms=4)
        left = peak.time > record.duration / 2
        ax.annotate(
            text,
            xy=(peak.time, y),
            xytext=(-12 if left else 12, dy),
            textcoords="offset points",
            ha="right" if left else "left",
            fontsize=8,
            color=COLORS[kind],
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85},
            arrowprops={"arrowstyle": "-", "color": COLORS[kind], "lw": 0.6},
        )


def _draw_lanes(ax: Any, record: ProfileRecord) -> None:
    lanes: dict[str, list[tuple[float, float]]] = {}
    for span in record.spans:
        lanes.setdefault(str(span.phase), []).append(
            (span.start - record.origin, max(span.seconds, 1e-4))
        )
    for row, (phase, bars) in enumerate(lanes.items()):
        color = _PHASE_COLORS.get(Phase(phase), "#999999")
        ax.broken_barh(bars, (row - 0.4, 0.8), facecolors=color, edgecolors="none")
    ax.set_yticks(range(len(lanes)), list(lanes), fontsize=8)
    ax.set_ylim(-0.6, max(len(lanes), 1) - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since start")
    ax.grid(axis="x", alpha=0.3)


def plot_record(record: ProfileRecord, path: str | os.PathLike[str]) -> Path:
    """Draw ``record``'s timeline into the PNG file ``path``; returns the path.

    Raises:
        UnsupportedError: matplotlib is not installed.
    """
    figure_class = require_matplotlib()
    lanes = len({s.phase for s in record.spans})
    fig = figure_class(figsize=(11, 5.5 + 0.25 * lanes), layout="constrained")
    if lanes:
        ax, lane_ax = fig.subplots(2, 1, sharex=True, height_ratios=[4, max(1.0, 0.35 * lanes)])
    else:
        ax, lane_ax = fig.subplots(1, 1), None
    _shade_phases(ax, record)
    draw_memory(ax, record)
    _annotate_peaks(ax, record)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.set_title(f"{record.target} — {record.status.describe()}", fontsize=10)
    if lane_ax is not None:
        _draw_lanes(lane_ax, record)
    else:
        ax.set_xlabel("seconds since start")
    ax.set_xlim(0, max(record.duration, 1e-3))
    out = Path(path)
    fig.savefig(out, dpi=110)
    return out
