"""Helpers of the cache fault matrix: damage a file, mount a small filesystem, run a load
in another process.

The long run repeats every case with more seeds (other offsets, other kill times)::

    PULLWEIGHTS_FAULT_SEEDS=50 .venv/bin/pytest -q tests/cache/test_faults.py
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
#: Seeds of every damage case: 1 by default (a few seconds), more for the long run.
SEEDS = list(range(int(os.environ.get("PULLWEIGHTS_FAULT_SEEDS", "1"))))


def damage(path: Path, how: str, seed: int) -> None:
    """Flip one bit, truncate to half, or zero one 4 KiB page (the whole file if smaller)."""
    rng = np.random.default_rng(seed)
    size = path.stat().st_size
    if how == "truncate":
        os.truncate(path, size // 2)
        return
    with open(path, "r+b") as f:
        if how == "flip":
            offset = int(rng.integers(size))
            f.seek(offset)
            byte = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([byte ^ (1 << int(rng.integers(8)))]))
        else:
            start = int(rng.integers(max(1, size // 4096))) * 4096 if size > 4096 else 0
            f.seek(start)
            f.write(b"\0" * min(4096, size - start))


def digest(out: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(out).tobytes()).hexdigest()


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (skips the test where mounting is not
    allowed: it needs root and CAP_SYS_ADMIN)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount_read_only(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)


LOAD = """
import asyncio, sys
sys.path.insert(0, {repo!r})
from tests.cache.faults import digest
from tests.cache.graphs import load
print("started", flush=True)
_graph, out = asyncio.run(load({root!r}, {model!r}))
print(digest(out), flush=True)
"""


def start_load(root: Path, model: Path) -> subprocess.Popen[str]:
    """A process loading ``model`` with the cache ``root``; prints ``started``, then the
    digest of the output."""
    code = LOAD.format(repo=str(REPO), root=str(root), model=str(model))
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
