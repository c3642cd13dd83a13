"""Run the real ``pullweights`` entry point in a subprocess (``python -m pullweights``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: this checkout first on the import path."""
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def cli(*args: str, timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``pullweights ARGS...`` run to completion; stdout and stderr captured as text."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    kwargs.setdefault("env", cli_env())
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(
        [sys.executable, "-m", "pullweights", *args],
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )


def popen(*args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
    """``pullweights ARGS...`` started, not waited for."""
    kwargs.setdefault("env", cli_env())
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen([sys.executable, "-m", "pullweights", *args], **kwargs)


def assert_one_line_error(err: str, *fragments: str) -> None:
    """A CLI error: one ``pullweights...: error:`` line, no traceback, every fragment in it."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, err)
