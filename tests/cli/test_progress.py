"""How a load shows on stderr: a bar over the whole load on a terminal, plain lines
otherwise (:mod:`pullweights.cli.progress`), from events and through the real CLI."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import select
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from pullweights.cli.progress import LoadReporter
from pullweights.events import Event, Phase, Progress, emit
from tests.reference import write_tiny_model

from .runner import cli, popen

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("m") / "tiny.gguf", "gemma3", quant="Q8_0")


def _span(
    phase: Phase, kind: str, t: float, nbytes: int = 0, stage: str = "", span: int = 1
) -> Event:
    return Event(phase, kind, "", nbytes, t, span, stage)  # type: ignore[arg-type]


def test_log_lines_from_events() -> None:
    out = io.StringIO()
    with LoadReporter("log", stream=out) as reporter:
        emit(_span(Phase.LOAD, "begin", 10.0, 8 * MiB, span=1))
        emit(_span(Phase.FETCH, "begin", 10.0, 4 * MiB, "s0", span=2))
        emit(_span(Phase.FETCH, "end", 10.5, 4 * MiB, "s0", span=2))
        emit(_span(Phase.TRANSFORM, "begin", 10.5, 4 * MiB, "s0", span=3))
        emit(_span(Phase.TRANSFORM, "end", 11.0, 4 * MiB, "s0", span=3))
        reporter.progress(Progress("w", 1, 2, 4 * MiB, 8 * MiB, 1.0))
        for i, stage in enumerate(("s0", "s1")):
            emit(_span(Phase.COMPILE, "begin", 11.0 + i, 2 * MiB, stage, span=10 + i))
            emit(_span(Phase.COMPILE, "end", 11.5 + i, 2 * MiB, stage, span=10 + i))
        emit(_span(Phase.TOKENIZER, "begin", 12.0, span=20))
        emit(_span(Phase.LOAD, "end", 12.5, 8 * MiB, span=1))
        emit(_span(Phase.TOKENIZER, "end", 13.0, span=20))
    emit(_span(Phase.LOAD, "begin", 20.0, MiB, span=30))  # after close: not reported
    lines = out.getvalue().splitlines()
    assert lines == [
        "pullweights: loading: 8.0 MiB of weights",
        "pullweights: weights: 1 of 2 pulled (1 more inside saved sessions); read 4.0 MiB, "
        "transformed 1 (4.0 MiB) in 1.00 s",
        "pullweights: compile: 2 stage(s) in 1.50 s",
        "pullweights: loading: weights and stages ready in 2.50 s",
        "pullweights: tokenizer: built in 1.00 s",
    ]


def test_prefetched_sessions_count_in_the_time_to_ready() -> None:
    out = io.StringIO()
    with LoadReporter("log", stream=out):
        emit(_span(Phase.COMPILE, "begin", 9.0, 2 * MiB, "s0", span=10))  # prefetched
        emit(_span(Phase.LOAD, "begin", 10.0, 2 * MiB, span=1))
        emit(_span(Phase.COMPILE, "end", 10.2, 2 * MiB, "s0", span=10))
        emit(_span(Phase.LOAD, "end", 10.5, 2 * MiB, span=1))
    lines = out.getvalue().splitlines()
    assert lines[-2:] == [
        "pullweights: compile: 1 stage(s) in 1.20 s",
        "pullweights: loading: weights and stages ready in 1.50 s",
    ]


def test_log_lines_through_the_cli(tiny: Path, tmp_path: Path) -> None:
    args = ("run", str(tiny), "Paris is", "--max-tokens", "2", "--cache-dir", str(tmp_path))
    done = cli(*args)  # stderr is a pipe, not a terminal
    assert done.returncode == 0, done.stderr
    logged = [line for line in done.stderr.splitlines() if line.startswith("pullweights: ")]
    assert logged[0].startswith("pullweights: loading: ") and "MiB of weights" in logged[0]
    kinds = {line.split(":")[1].strip() for line in logged}
    assert {"loading", "weights", "compile", "tokenizer"} <= kinds, logged
    assert len(logged) <= 6  # a few lines, not one per weight
    assert "\r" not in done.stderr  # no bar
    quiet = cli(*args, "--quiet")
    assert quiet.stderr == ""


def _pty_stderr(*args: str) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal (120 columns); return what it drew."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = popen(*args, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    drawn = b""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                drawn += chunk
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=60)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, drawn.decode(errors="replace")


def test_one_bar_over_the_whole_load_on_a_terminal(tiny: Path, tmp_path: Path) -> None:
    code, drawn = _pty_stderr(
        "run", str(tiny), "Paris is", "--max-tokens", "2", "--cache-dir", str(tmp_path)
    )
    assert code == 0, drawn
    frames = [f for f in drawn.replace("\n", "\r").split("\r") if "%|" in f or "B [" in f]
    assert frames, drawn
    labels = {f.split(":")[0].split()[0] for f in frames if ":" in f}
    # Every step of the load shows, in one bar: pulling and transforming weights, each
    # stage compiling and saving, the tokenizer.
    assert {"transform", "compile", "tokenizer"} <= labels, labels
    assert "cache-write" in labels, labels  # a first load writes the cache
    assert any("100%" in f for f in frames)
    assert "pullweights: loading:" not in drawn  # the bar, not log lines
    assert "generated:" in drawn  # the report follows the bar
