"""``pullweights bench`` in a reduced form (one round) on a tiny model written here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reference import write_tiny_model

ALWAYS = {"ort-embedded", "ort-external", "pw-cold", "pw-http-cold", "pw-warm"}


def test_bench_reduced(tmp_path: Path) -> None:
    gguf = write_tiny_model(tmp_path / "tiny.gguf", "llama", quant="Q8_0")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "pullweights", "bench", str(gguf), "--runs", "1", "-o", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((out / "bench-tiny.json").read_text())
    ran = {s["key"]: s for s in doc["scenarios"] if not s["skipped"]}
    assert set(ran) >= ALWAYS
    for s in ran.values():
        assert s["ok_runs"] == 1, s
        medians = s["medians"]
        assert 0 < medians["ready_s"] <= medians["first_token_s"]
        assert 0 < medians["peak_private"] <= medians["peak_rss"]
        record = s["median_run_record"]
        assert record["status"]["exit_code"] == 0 and record["samples"]["time"]
    # Every ratio is against the best baseline of its column, which is 1.0 itself.
    for metric in ("ready_s", "first_token_s", "peak_private", "peak_rss"):
        ratios = [s["ratio_to_best_baseline"][metric] for s in ran.values() if s["baseline"]]
        assert min(ratios) == pytest.approx(1.0)
    # The pullweights scenarios saw the runtime's own events (weights pulled, compiled).
    cold = ran["pw-cold"]["median_run_record"]
    phases = {p["phase"] for p in cold["phases"]}
    assert {"load", "compile", "generate"} <= phases
    table = (out / "bench-tiny.md").read_text()
    assert "| pullweights, cold (loopback HTTP) | 1/1 |" in table
    assert (out / "bench-tiny.png").read_bytes()[:4] == b"\x89PNG"
