"""``pullweights export`` on the command line: files written, bad input in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.reference import write_tiny_model


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pullweights", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        timeout=240,
    )


def test_export_writes_model_and_data(tmp_path: Path) -> None:
    gguf = write_tiny_model(tmp_path / "m.gguf", "llama", quant="Q8_0")
    done = _cli("export", str(gguf), str(tmp_path / "out" / "m.onnx"), "--external-data")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "m.onnx").is_file() and (tmp_path / "out" / "m.onnx.data").is_file()
    assert done.stderr.startswith("wrote ")


def test_export_of_a_missing_model_is_one_line(tmp_path: Path) -> None:
    done = _cli("export", str(tmp_path / "missing.gguf"), str(tmp_path / "m.onnx"))
    assert done.returncode == 1
    assert done.stderr.startswith("pullweights: error:") and "Traceback" not in done.stderr
    assert not (tmp_path / "m.onnx").exists()
