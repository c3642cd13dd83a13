"""The bench's outputs: a JSON document, a markdown table, one PNG of every timeline."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pullweights.bench.runner import METRICS, BenchResult
from pullweights.profile.plot import draw_memory, require_matplotlib

__all__ = ["markdown_table", "plot_timelines", "to_json", "write_all"]

_HEADERS = {
    "ready_s": "time to ready",
    "first_token_s": "time to first token",
    "peak_private": "peak private",
    "peak_rss": "peak RSS",
}


def _value(metric: str, value: float) -> str:
    return f"{value:.2f} s" if metric.endswith("_s") else f"{value / 2**20:.0f} MiB"


def to_json(result: BenchResult) -> dict[str, Any]:
    """Setup, per-scenario medians and ratios, every run, and the median runs' records."""
    scenarios = []
    for s in result.scenarios:
        entry: dict[str, Any] = {
            "key": s.key, "title": s.title, "baseline": s.baseline, "skipped": s.skipped,
        }  # fmt: skip
        if not s.skipped:
            entry["ok_runs"] = len(result.ok_runs(s.key))
            entry["medians"] = {m: result.median(s.key, m) for m in METRICS}
            ratios = {}
            for m in METRICS:
                best, mine = result.best_baseline(m), result.median(s.key, m)
                ratios[m] = mine / best[1] if best and mine is not None and best[1] else None
            entry["ratio_to_best_baseline"] = ratios
            median = result.median_run(s.key)
            entry["median_run_record"] = (
                median.record.to_json() if median and median.record else None
            )
        scenarios.append(entry)
    return {
        "format": "pullweights-bench/1",
        "setup": result.setup,
        "best_baselines": {m: result.best_baseline(m) for m in METRICS},
        "scenarios": scenarios,
        "runs": [{k: v for k, v in vars(r).items() if k != "record"} for r in result.runs],
    }


def markdown_table(result: BenchResult) -> str:
    """One row per scenario: medians, each with its ratio to the best baseline."""
    setup = result.setup
    lines = [
        f"Model {' '.join(setup['model'])} ({setup['gguf_bytes'] / 1e6:.0f} MB GGUF), "
        f"{setup['prompt_tokens']}-token prompt, context {setup['context']}, "
        f"{setup['threads']} threads; {setup['runs']} fresh processes per scenario, "
        "interleaved; medians. Times from process start (interpreter and imports "
        "included); peaks over the whole process (sampled at 100 Hz). In brackets: the "
        "ratio to the best baseline (onnxruntime, llama.cpp, transformers) for that column.",
        "",
        "| scenario | runs ok | " + " | ".join(_HEADERS[m] for m in METRICS) + " |",
        "|---|---|" + "---|" * len(METRICS),
    ]
    for s in result.scenarios:
        if s.skipped:
            continue
        cells = []
        for m in METRICS:
            mine, best = result.median(s.key, m), result.best_baseline(m)
            if mine is None:
                cells.append("-")
                continue
            ratio = f" ({mine / best[1]:.2f}x)" if best and best[1] else ""
            cells.append(_value(m, mine) + ratio)
        ok = f"{len(result.ok_runs(s.key))}/{setup['runs']}"
        lines.append(f"| {s.title} | {ok} | " + " | ".join(cells) + " |")
    skipped = [s for s in result.scenarios if s.skipped and s.skipped != "not selected"]
    if skipped:
        lines += ["", "Not run: " + "; ".join(f"{s.title} ({s.skipped})" for s in skipped) + "."]
    return "\n".join(lines) + "\n"


def plot_timelines(result: BenchResult, path: str | os.PathLike[str]) -> Path:
    """One panel per scenario (its median run): RSS and private memory, marks.

    Raises:
        UnsupportedError: matplotlib is not installed.
    """
    figure_class = require_matplotlib()
    shown = [(s, r) for s in result.scenarios if (r := result.median_run(s.key)) and r.record]
    fig = figure_class(figsize=(11, 1.0 + 2.0 * max(len(shown), 1)), layout="constrained")
    axes = fig.subplots(max(len(shown), 1), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (scenario, run) in zip(axes, shown, strict=False):
        assert run.record is not None
        draw_memory(ax, run.record, kinds=("rss", "private"))
        ax.set_title(
            f"{scenario.title}: first token {run.first_token_s:.2f} s, peak private "
            f"{(run.peak_private or 0) / 2**20:.0f} MiB",
            fontsize=9,
            loc="left",
        )
        ax.legend(loc="upper right", fontsize=7)
    axes[-1].set_xlabel("seconds since the process started")
    out = Path(path)
    fig.savefig(out, dpi=100)
    return out


def write_all(result: BenchResult, out_dir: Path, stem: str, plot: bool = True) -> list[Path]:
    """Write ``stem``.json, .md and (with ``plot``) .png into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    written[0].write_text(json.dumps(to_json(result), indent=1) + "\n")
    written[1].write_text(markdown_table(result))
    if plot:
        written.append(plot_timelines(result, out_dir / f"{stem}.png"))
    return written
