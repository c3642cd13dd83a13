"""The markdown summary of a profile record: peaks, what was alive at them, phases."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pullweights.profile.samples import KINDS

if TYPE_CHECKING:
    from pullweights.profile.analysis import Peak, PhaseSummary
    from pullweights.profile.record import ProfileRecord

__all__ = ["mark_label", "mib", "render"]

#: Weights listed at a peak before the rest is summed into one line.
MAX_WEIGHTS = 15
_KIND_NAMES = {
    "rss": "RSS",
    "private": "private (anonymous)",
    "file": "file-backed",
    "swap": "swap",
}


def mark_label(phase: str, name: str) -> str:
    """``"ready"``, or ``"ready (model.gguf)"`` for a named mark (paths shortened)."""
    if not name:
        return phase
    short = name.rstrip("/").rsplit("/", 1)[-1]
    return f"{phase} ({short[:24]})"


def mib(nbytes: float, signed: bool = False) -> str:
    """``nbytes`` in MiB, one decimal below 10 MiB."""
    value = nbytes / 2**20
    text = f"{value:+.1f}" if signed else f"{value:.1f}"
    if abs(value) >= 10:
        text = f"{value:+.0f}" if signed else f"{value:.0f}"
    return f"{text} MiB"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _amount(summary: PhaseSummary) -> str:
    if not summary.nbytes:
        return "-"
    return f"{summary.nbytes} tokens" if summary.counts_tokens else mib(summary.nbytes)


def _weights(peak: Peak) -> list[str]:
    """The weights in flight at ``peak``, as a table (the largest first)."""
    if not peak.weights:
        return ["No weight was being fetched, transformed or written."]
    n = len(peak.weights)
    lines = [
        f"{n} weight{'s' if n != 1 else ''} in flight, {mib(peak.weights_nbytes)} "
        "(fetch / transform / cache-write spans begun and not ended):",
        "",
    ]
    shown = peak.weights[:MAX_WEIGHTS]
    rows = [[f"`{w.name}`", ", ".join(w.phases), mib(w.nbytes)] for w in shown]
    rest = peak.weights[MAX_WEIGHTS:]
    if rest:
        rows.append([f"{len(rest)} more", "", mib(sum(w.nbytes for w in rest))])
    return lines + _table(["weight", "phase", "bytes"], rows)


def render(record: ProfileRecord) -> str:
    """The summary as markdown text."""
    samples = record.samples
    lines = [
        f"# Profile: {record.target}",
        "",
        f"- status: **{record.status.describe()}**",
        f"- duration: {record.duration:.2f} s; {len(samples)} memory samples "
        f"({samples.rate_hz():.0f} Hz, process tree of up to "
        f"{max(samples.processes, default=0)} processes)",
    ]
    kernel_peak = record.metadata.get("kernel_peak_rss")
    if kernel_peak:
        lines.append(f"- kernel peak RSS (largest single process, ru_maxrss): {mib(kernel_peak)}")
    firsts: dict[str, float] = {}
    for m in record.marks:
        firsts.setdefault(mark_label(str(m.phase), m.name), m.time - record.origin)
    if firsts:
        lines.append("- marks: " + ", ".join(f"{name} at {t:.3f} s" for name, t in firsts.items()))
    lines += ["", "## Peaks", ""]
    rows = []
    for kind in KINDS:
        peak = record.peak(kind)
        if peak is None or (kind == "swap" and peak.nbytes == 0):
            continue
        rows.append(
            [
                _KIND_NAMES[kind],
                mib(peak.nbytes),
                f"{peak.time:.3f} s",
                ", ".join(peak.phases) or "-",
            ]
        )
    lines += _table(["memory", "peak", "at", "phases active"], rows)
    if not any(samples.swap):
        lines += ["", "No swap was used."]
    for kind in ("private", "rss"):
        peak = record.peak(kind)
        if peak is None:
            continue
        lines += ["", f"### At the {_KIND_NAMES[kind]} peak ({peak.time:.3f} s)", ""]
        lines += _weights(peak)
        pulling = record.pulling_peak(kind)
        if not peak.weights and pulling is not None:
            lines += [
                "",
                f"Highest while weights were being pulled: {mib(pulling.nbytes)} at "
                f"{pulling.time:.3f} s ({', '.join(pulling.phases)}).",
                "",
                *_weights(pulling),
            ]
    lines += ["", "## Phases", ""]
    if not record.phases:
        lines.append("No load events were seen (the run emitted no pullweights events).")
    else:
        rows = [
            [
                p.label,
                str(p.spans) + (f" ({p.failed} not ok)" if p.failed else ""),
                f"{p.start:.3f}",
                f"{p.busy_seconds:.3f}",
                _amount(p),
                f"{p.gb_per_s:.2f}" if p.gb_per_s is not None else "-",
                mib(p.private_added, signed=True),
                mib(p.rss_added, signed=True),
            ]
            for p in record.phases
        ]
        lines += _table(
            [
                "phase",
                "spans",
                "start (s)",
                "time (s)",
                "bytes",
                "GB/s",
                "private added",
                "RSS added",
            ],
            rows,
        )
        lines += [
            "",
            "Time: seconds at least one span of the phase ran (overlaps counted once). "
            "Memory added: at the phase's last end minus at its first begin.",
        ]
    return "\n".join(lines) + "\n"
