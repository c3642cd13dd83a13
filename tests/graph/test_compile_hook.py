"""``build(on_compile_start=...)``: called once, when the last stage starts compiling."""

from __future__ import annotations

import numpy as np

from pullweights import GraphBuilder, TensorDescriptor, create_context, raw_weight
from pullweights.events import Event, Phase, Progress, subscribed
from pullweights.sources.memory import MemorySource


async def test_on_compile_start_runs_once_when_the_last_stage_compiles() -> None:
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    ctx = create_context(cache_dir=None)
    b = GraphBuilder(ctx)
    ref = raw_weight(MemorySource(w.tobytes()), 0, "float32", w.shape, label="w")
    x = b.input("x", TensorDescriptor("float32", [2, 4]))
    with b.stage("one"):
        h = b.matmul(x, b.input("w", ref.descriptor, weight=ref))
    with b.stage("two"):
        y = b.relu(h)
    progress: list[Progress] = []
    seen: list[Event] = []
    calls: list[int] = []
    with subscribed(seen.append):
        graph = await b.build(
            {"y": y},
            stages="marked",
            progress=progress.append,
            on_compile_start=lambda: calls.append(len([e for e in seen if e.kind == "begin"])),
        )
    assert [s.lowered.name for s in graph.stages] == ["one", "two"]
    assert len(calls) == 1
    compiles = [e for e in seen if e.phase == Phase.COMPILE and e.kind == "begin"]
    assert [e.stage for e in compiles] == ["one", "two"]
    # called after the first stage's compile began and before the second's
    first = next(i for i, e in enumerate(seen) if e.phase == Phase.COMPILE)
    assert calls[0] > len([e for e in seen[:first] if e.kind == "begin"])
    assert progress and progress[-1].done == progress[-1].total == 1
    xs = np.ones((2, 4), dtype=np.float32)
    np.testing.assert_array_equal((await graph.compute({"x": xs}))["y"], xs @ w)
