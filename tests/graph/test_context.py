"""Contexts: each compute policy maps to the documented onnxruntime session settings."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from pullweights import GraphBuilder, GraphError, TensorDescriptor, create_context

ALL = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
BASIC = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
SPIN = "session.intra_op.allow_spinning"

# policy -> (intra-op threads, spinning, optimization level, CPU only)
MAPPING = {
    "default": (0, "0", ALL, False),
    "high-performance": (os.cpu_count(), "1", ALL, False),
    "low-power": (1, "0", ALL, True),
    "fallback": (1, "0", BASIC, True),
}


@pytest.mark.parametrize("policy", MAPPING)
def test_policy_maps_to_session_options(policy: str) -> None:
    threads, spinning, level, cpu_only = MAPPING[policy]
    context = create_context(policy, cache_dir=None)  # type: ignore[arg-type]
    assert context.policy == policy
    options = context.session_options()
    assert options.intra_op_num_threads == threads
    assert options.inter_op_num_threads == 1
    assert options.get_session_config_entry(SPIN) == spinning
    assert options.graph_optimization_level == level
    assert context.providers[-1] == "CPUExecutionProvider"
    if cpu_only:
        assert context.providers == ["CPUExecutionProvider"]
    else:  # the best available provider first
        wanted = [p for p in ("CUDAExecutionProvider",) if p in ort.get_available_providers()]
        assert context.providers == [*wanted, "CPUExecutionProvider"]


@pytest.mark.parametrize("policy", MAPPING)
async def test_every_policy_runs_a_graph(policy: str) -> None:
    b = GraphBuilder(create_context(policy, cache_dir=None))  # type: ignore[arg-type]
    x = b.input("x", TensorDescriptor("float32", [2, 3]))
    graph = await b.build({"y": b.relu(x)})
    data = np.array([[-1, 0, 1], [2, -3, 4]], np.float32)
    np.testing.assert_array_equal((await graph.compute({"x": data}))["y"], np.maximum(data, 0))


def test_thread_override() -> None:
    context = create_context("high-performance", intra_op_threads=3, cache_dir=None)
    assert context.session_options().intra_op_num_threads == 3
    assert create_context("low-power", intra_op_threads=0, cache_dir=None).intra_op_threads == 0


def test_unknown_policy_and_bad_threads() -> None:
    with pytest.raises(GraphError, match=r"^unknown compute policy 'turbo'; expected one of"):
        create_context("turbo")  # type: ignore[arg-type]
    with pytest.raises(GraphError, match=r"^intra_op_threads must be >= 0, got -1"):
        create_context(intra_op_threads=-1, cache_dir=None)


def test_cache_dir_choices(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert create_context(cache_dir=None).cache_dir is None
    assert create_context(cache_dir=None).cache is None
    assert create_context(cache_dir=tmp_path / "c").cache_dir == tmp_path / "c"
    monkeypatch.setenv("PULLWEIGHTS_CACHE", str(tmp_path / "env"))
    assert create_context().cache_dir == tmp_path / "env"
    monkeypatch.delenv("PULLWEIGHTS_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert create_context().cache_dir == tmp_path / ".cache" / "pullweights"
