"""Running a reference implementation (llama.cpp, transformers) in its own interpreter:
requests as JSON in, one ``.npz`` of arrays per request out."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run_requests"]


def run_requests(
    python: str | os.PathLike[str],
    runner: Path,
    requests: Sequence[Mapping[str, Any]],
    request_file: Path,
    *,
    env: Mapping[str, str] | None = None,
) -> list[dict[str, np.ndarray]]:
    """``python runner request_file`` on ``requests`` (each naming its ``"out"`` file);
    the arrays of every request's output, in order. Fails the test if the runner fails."""
    request_file.write_text(json.dumps(list(requests)))
    done = subprocess.run(
        [str(python), str(runner), str(request_file)],
        capture_output=True,
        text=True,
        timeout=600,
        env=None if env is None else {**os.environ, **env},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = []
    for request in requests:
        with np.load(request["out"]) as d:
            results.append({k: d[k] for k in d.files})
    return results
