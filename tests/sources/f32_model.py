"""A small GGUF of four fp32 matrices, and the matmul chain over them, for remote tests."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

import pullweights as pw
from pullweights.gguf import GGUFFile

N = 2048  # four N x N fp32 tensors: 64 MiB of weights
WEIGHT_BYTES = 4 * N * N * 4


def write_f32_model(path: Path, seed: int = 0) -> None:
    """Write tensors ``w0``..``w3``, each ``N x N`` fp32."""
    writer = gguf.GGUFWriter(str(path), "test")
    rng = np.random.default_rng(seed)
    for i in range(4):
        writer.add_tensor(f"w{i}", (rng.standard_normal((N, N)) / 32).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def chain_builder(model: GGUFFile, ctx: pw.Context) -> tuple[pw.GraphBuilder, pw.Operand]:
    """``ones(1, N) @ w0 @ w1 @ w2 @ w3`` with every weight pulled from ``model``."""
    b = pw.GraphBuilder(ctx)
    h = b.input("x", pw.TensorDescriptor("float32", [1, N]))
    for i in range(4):
        ref = model.tensor(f"w{i}").payload().ref()
        h = b.matmul(h, b.input(f"w{i}", ref.descriptor, weight=ref))
    return b, h


def expected_chain(path: Path) -> np.ndarray:
    """The chain computed by numpy from the file itself (read by ``gguf.GGUFReader``)."""
    expect = np.ones((1, N), np.float32)
    for t in gguf.GGUFReader(str(path)).tensors:
        expect = expect @ np.asarray(t.data).reshape(N, N)
    return expect
