"""Weights from a file reference reach onnxruntime without private copies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import pullweights as pw
from pullweights.memstats import MemoryMonitor, snapshot

MIB = 1024 * 1024
LAYERS = 4
DIM = 4096  # 4 x 4096 x 4096 x fp32 = 256 MiB of weights


def _write_weights(path: Path) -> list[int]:
    """Write LAYERS fp32 matrices with a 64-byte header; return their offsets."""
    offsets = []
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        f.write(b"\0" * 64)
        for _ in range(LAYERS):
            offsets.append(f.tell())
            for _ in range(DIM // 512):  # bounded temporaries: 8 MiB at a time
                block = rng.standard_normal((512, DIM), dtype=np.float32) / 64
                f.write(block.tobytes())
    return offsets


@pytest.mark.slow
async def test_file_weights_add_little_private_memory(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    offsets = _write_weights(path)
    weight_bytes = LAYERS * DIM * DIM * 4
    assert weight_bytes >= 256 * MIB

    ctx = pw.create_context(cache_dir=None)
    # Warm onnxruntime up so its one-time allocations do not count against the weights.
    warm = pw.GraphBuilder(ctx)
    wx = warm.input("x", pw.TensorDescriptor("float32", [1, 8]))
    await (await warm.build({"y": warm.relu(wx)})).compute({"x": np.ones((1, 8), np.float32)})

    source = pw.FileSource(path)
    before = snapshot()
    with MemoryMonitor(interval=0.005) as mon:
        b = pw.GraphBuilder(ctx)
        seq = pw.Dim("seq", 1, 16)
        x = b.input("x", pw.TensorDescriptor("float32", [seq, DIM]))
        h = x
        for i, off in enumerate(offsets):
            ref = pw.raw_weight(source, off, "float32", (DIM, DIM), label=f"w{i}")
            h = b.relu(b.matmul(h, b.input(f"w{i}", ref.descriptor, weight=ref)))
        graph = await b.build({"y": h})
        xs = np.ones((2, DIM), np.float32)
        out = await graph.compute({"x": xs})
    growth = mon.peak_anonymous - before.anonymous
    print(f"private growth {growth / MIB:.1f} MiB of {weight_bytes / MIB:.0f} MiB weights")
    assert growth < 0.10 * weight_bytes, f"private memory grew {growth / MIB:.1f} MiB"

    # The result is right: recompute with numpy from the same file.
    expect = xs
    data = np.memmap(path, dtype=np.float32, mode="r")
    for off in offsets:
        w = data[off // 4 : off // 4 + DIM * DIM].reshape(DIM, DIM)
        expect = np.maximum(expect @ w, 0)
    np.testing.assert_allclose(out["y"], expect, rtol=1e-4, atol=1e-4)
    del graph, data
    source.close()
