"""``pullweights profile``: a tiny GGUF model end to end, commands, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reference import write_tiny_model

ENV = {**os.environ, "PYTHONPATH": os.getcwd()}


def _cli(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    prefix = ["-c", code] if code else ["-m", "pullweights"]
    return subprocess.run(
        [sys.executable, *prefix, *args], capture_output=True, text=True, env=ENV, timeout=240
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf", "qwen2", quant="Q8_0")


def test_profile_a_model(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _cli("profile", str(tiny), "Paris is", "-o", str(out), "--cold", "--max-tokens", "3")
    assert done.returncode == 0, done.stderr
    assert "peak private" in done.stderr
    doc = json.loads((out / "profile-tiny.json").read_text())
    assert doc["status"]["exit_code"] == 0 and not doc["status"]["failed"]
    assert {"ready", "first-token"} <= set(doc["marks"])
    assert doc["marks"]["ready"] <= doc["marks"]["first-token"] <= doc["duration_s"]
    phases = {p["phase"] for p in doc["phases"]}
    assert {"load", "generate"} <= phases
    assert doc["peaks"]["rss"]["nbytes"] >= doc["peaks"]["private"]["nbytes"] > 0
    assert (out / "profile-tiny.md").read_text().startswith("# Profile:")
    assert (out / "profile-tiny.png").read_bytes()[:4] == b"\x89PNG"


def test_profile_a_command_passes_its_status_through(tmp_path: Path) -> None:
    done = _cli(
        "profile", "-o", str(tmp_path), "--no-plot", "--",
        sys.executable, "-c", "import sys; sys.exit(5)",
    )  # fmt: skip
    assert done.returncode == 5
    (record,) = tmp_path.glob("*.json")
    doc = json.loads(record.read_text())
    assert doc["status"]["failed"] and doc["status"]["exit_code"] == 5
    assert not list(tmp_path.glob("*.png"))


def test_unknown_model_is_one_clear_error(tmp_path: Path) -> None:
    done = _cli("profile", "no-such-model", "hi", "-o", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.startswith("pullweights: error: unknown model 'no-such-model'")
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_missing_plot_extra_is_one_clear_error(tiny: Path, tmp_path: Path) -> None:
    block = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from pullweights.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    done = _cli("profile", str(tiny), "hi", "-o", str(tmp_path), code=block)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "pullweights: error: plotting needs matplotlib, which is not installed: "
        'pip install -e ".[plot]"'
    )
    assert not list(tmp_path.iterdir())  # failed before profiling anything
