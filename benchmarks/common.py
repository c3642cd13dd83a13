"""What several benchmarks share: a bare CPU session of an ONNX graph, timing sessions
interleaved, and keeping a result under its key in a results file."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnx import GraphProto, helper

__all__ = ["cpu_session", "interleaved_us", "save_entry"]


def cpu_session(graph: GraphProto, threads: int) -> ort.InferenceSession:
    """A CPU session of ``graph`` (default and ``com.microsoft`` opsets) on ``threads``
    intra-op threads that do not spin, as pullweights' default policy runs."""
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def interleaved_us(
    runs: Mapping[str, tuple[ort.InferenceSession, Mapping[str, np.ndarray]]],
    rounds: int,
    calls: int,
) -> dict[str, float]:
    """Median microseconds per call of each ``(session, feeds)``: ``rounds`` rounds that
    each run every session ``calls`` times in turn (after one untimed call)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (session, feeds) in runs.items():
            session.run(None, dict(feeds))
            start = time.perf_counter()
            for _ in range(calls):
                session.run(None, dict(feeds))
            times[name].append((time.perf_counter() - start) / calls * 1e6)
    return {name: statistics.median(t) for name, t in times.items()}


def save_entry(path: str | Path, key: str, result: Any) -> None:
    """Keep ``result`` under ``key`` in the JSON results file ``path`` (other keys stay)."""
    out = Path(path)
    entries = json.loads(out.read_text()) if out.exists() else {}
    entries[key] = result
    out.write_text(json.dumps(entries, indent=1) + "\n")
