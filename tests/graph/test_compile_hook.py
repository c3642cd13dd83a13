"""``compile_graph(on_session_started=...)``: called once the session is being created."""

from __future__ import annotations

import numpy as np

from pullweights import GraphBuilder, TensorDescriptor, create_context, raw_weight
from pullweights.graph.compiled import compile_graph
from pullweights.graph.lowering import lower
from pullweights.loader import LoadEvent
from pullweights.sources.memory import MemorySource


async def test_on_session_started_runs_after_bound_weights_are_pulled() -> None:
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    ctx = create_context(cache_dir=None)
    b = GraphBuilder(ctx)
    ref = raw_weight(MemorySource(w.tobytes()), 0, "float32", w.shape, label="w")
    x = b.input("x", TensorDescriptor("float32", [2, 4]))
    lowered = lower(b, {"y": b.matmul(x, b.input("w", ref.descriptor, weight=ref))})
    events: list[LoadEvent] = []
    seen_at_call: list[int] = []
    graph = await compile_graph(
        ctx,
        lowered,
        progress=events.append,
        on_session_started=lambda: seen_at_call.append(len(events)),
    )
    assert len(events) >= 1
    assert seen_at_call == [len(events)]  # once, after every weight was reported
    xs = np.ones((2, 4), dtype=np.float32)
    np.testing.assert_array_equal((await graph.compute({"x": xs}))["y"], xs @ w)
