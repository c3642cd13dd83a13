"""Ctrl-C during generation and a reader that goes away (``| head``), through the real CLI."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reference import write_tiny_model

from .runner import cli, cli_env, popen

# A model large enough that greedy decoding runs for thousands of tokens (seconds) before
# its first end-of-generation token: there is time to interrupt it.
SLOW = {"hidden": 512, "n_layers": 8, "n_heads": 8, "n_kv_heads": 4, "head_dim": 64, "ffn": 2048}


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("m") / "slow.gguf"
    return write_tiny_model(path, "qwen2", quant="Q8_0", context_length=65536, **SLOW)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("m") / "tiny.gguf", "qwen2", quant="Q8_0")


def test_ctrl_c_ends_the_line_and_prints_the_report(slow: Path) -> None:
    args = ("run", str(slow), "Paris is", "--greedy", "--no-cache", "--no-progress")
    proc = popen(
        *args, "--max-tokens", "20000", "--context", "20000",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.read(1)  # generation has begun
        assert first
        proc.send_signal(signal.SIGINT)  # what the terminal sends on Ctrl-C
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text, report = (first + out).decode(), err.decode()
    assert proc.returncode == 130, report
    assert "Traceback" not in report and "KeyboardInterrupt" not in report
    assert text.endswith("\n") and len(text) > 1  # the line is ended, the text kept
    generated = next(line for line in report.splitlines() if line.startswith("generated:"))
    assert "(interrupted)" in generated
    assert int(generated.split()[1]) < 20000
    assert "memory: peak RSS" in report and "prompt: 2 tokens" in report


def _closed_stdout(*args: str) -> subprocess.CompletedProcess[str]:
    """Run with stdout a pipe nobody reads any more (its read end closed)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return cli(*args, stdout=write)
    finally:
        os.close(write)


@pytest.mark.parametrize("command", ["inspect", "run", "cache list"])
def test_a_closed_stdout_is_no_traceback(tiny: Path, tmp_path: Path, command: str) -> None:
    cache = str(tmp_path / "cache")
    if command == "cache list":
        assert cli("pull", str(tiny), "--cache-dir", cache, "--no-progress").returncode == 0
    args = {
        "inspect": ("inspect", str(tiny)),
        "run": ("run", str(tiny), "Paris is", "--no-cache", "--max-tokens", "8"),
        "cache list": ("cache", "list", "--cache-dir", cache),
    }[command]
    done = _closed_stdout(*args)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr
    assert done.returncode == 141  # 128 + SIGPIPE, as a program the signal ended


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("head") is None, reason="bash")
def test_run_piped_into_head(slow: Path) -> None:
    command = [sys.executable, "-m", "pullweights", "run", str(slow), "Paris is", "--greedy"]
    command += ["--no-cache", "--max-tokens", "20000", "--context", "20000", "--no-progress"]
    line = f"set -o pipefail; {shlex.join(command)} | head -c 20"
    done = subprocess.run(
        ["bash", "-c", line], capture_output=True, text=True, env=cli_env(), timeout=120
    )
    assert len(done.stdout.encode()) <= 20
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    # Generation went on after head left (thousands of tokens): the next write failed.
    assert done.returncode == 141, done.stderr
