"""Stages share one onnxruntime arena: a graph's working memory does not grow with its
number of sessions."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Eight stages, each making 16 MiB intermediates from the graph's input and handing on a
# scalar. With an arena per session each session keeps its own (8 x >= 16 MiB); with one
# shared arena they are reused.
SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import numpy as np
    from pullweights import GraphBuilder, TensorDescriptor, create_context
    from pullweights.memstats import snapshot

    N = 4 << 20

    async def main():
        b = GraphBuilder(create_context("low-power", cache_dir=None))
        x = b.input("x", TensorDescriptor("float32", [N]))
        h = b.constant(np.float32(0.0))
        for i in range(8):
            with b.stage(f"s{i}"):
                big = b.mul(b.add(x, b.constant(np.float32(i))), b.constant(np.float32(2.0)))
                h = b.add(h, b.reduce_sum(big))
        graph = await b.build({"y": h}, stages="marked")
        assert len(graph.stages) == 8
        data = np.ones(N, np.float32)
        before = snapshot().anonymous
        y = (await graph.compute({"x": data}))["y"]
        assert float(y.reshape(-1)[0]) == 2.0 * N * sum(range(1, 9)), y
        print((snapshot().anonymous - before) >> 20)

    asyncio.run(main())
    """
)


@pytest.mark.timeout(120)
def test_working_memory_does_not_grow_with_the_number_of_stages() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=120
    )
    grown_mib = int(out.stdout.strip().splitlines()[-1])
    # measured: 50 MiB shared, 264 MiB with one arena per session
    assert grown_mib < 128, grown_mib
