"""Profiling commands: exit status passed through, failures and interrupts recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pullweights.events import Phase
from pullweights.profile import profile_command
from pullweights.profile.command import read_events

EMITS = """
import sys
from pullweights import events
with events.span(events.Phase.COMPILE, "s", 10, stage="all"):
    pass
sys.exit(int(sys.argv[1]))
"""


def test_exit_status_and_events() -> None:
    record = profile_command([sys.executable, "-c", EMITS, "0"], target="ok run")
    assert record.status.ok and record.status.exit_code == 0
    assert [(s.phase, s.stage) for s in record.spans] == [(Phase.COMPILE, "all")]
    assert record.metadata["kernel_peak_rss"] > 0
    failed = profile_command([sys.executable, "-c", EMITS, "3"])
    assert failed.status.failed and failed.status.exit_code == 3 and not failed.status.interrupted
    assert len(failed.spans) == 1  # its events are kept


def test_command_not_found() -> None:
    record = profile_command(["/nonexistent/program", "x"])
    assert record.status.failed and record.status.exit_code == 127
    assert "cannot run" in record.status.error


def test_killed_by_a_signal() -> None:
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    record = profile_command([sys.executable, "-c", code])
    assert record.status.failed and record.status.signal == signal.SIGKILL
    assert record.status.exit_code == 128 + signal.SIGKILL and "SIGKILL" in record.status.error


def test_partial_event_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text(
        '{"phase":"ready","kind":"mark","name":"","nbytes":0,"time":1.0}\n{"phase":"fet'
    )
    found, bad = read_events(path)
    assert [e.phase for e in found] == [Phase.READY] and bad == 1
    assert read_events(tmp_path / "missing.jsonl") == ([], 0)


# A child that is told it started, then would run for a minute.
SLEEPER = (
    "import sys, time\n"
    "from pullweights import events\n"
    "with events.span(events.Phase.FETCH, 'w', 5):\n"
    "    print('started', flush=True)\n"
    "    time.sleep(60)\n"
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_command_still_writes_a_record(tmp_path: Path, sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pullweights",
            "profile",
            "-o",
            str(tmp_path),
            "--no-plot",
            "--name",
            "run",
            "--",
            sys.executable,
            "-c",
            SLEEPER,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "started"
        proc.send_signal(sig)  # to the profiler only, not its process group
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    doc = json.loads((tmp_path / "run.json").read_text())
    status = doc["status"]
    assert status["interrupted"] and not status["failed"]
    assert status["error"].startswith(f"{sig.name} received")
    assert proc.returncode == status["exit_code"] != 0  # the child's status, passed through
    assert next((e["phase"], e["kind"]) for e in doc["events"]) == ("fetch", "begin")
    assert doc["phases"][0]["failed"] == 1  # the fetch never ended
    assert "interrupted" in (tmp_path / "run.md").read_text()
    assert "profile: interrupted" in err  # the profiler's own report (the child may print a
    # KeyboardInterrupt traceback of its own)
