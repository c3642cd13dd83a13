"""The layouts run on onnxruntime's fast MatMulNBits path (prepacked constants), not the
dequantize-every-call path: 2048 x 2048 at M=1 takes ~0.1-0.4 ms there, 10-100 ms off it."""

from __future__ import annotations

import time

import numpy as np
import pytest
from gguf import GGMLQuantizationType

from pullweights.gguf.layouts import FORMATS, MatMulNBitsTransform

from .blockdata import random_blocks
from .ort_graphs import matmul_model

TYPES = sorted(FORMATS, key=lambda t: t.name)


@pytest.mark.slow
@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_2048_square_at_m1_is_on_the_fast_path(qtype: GGMLQuantizationType) -> None:
    shape = (2048, 2048)
    t = MatMulNBitsTransform(qtype, shape)
    model = matmul_model(t, t.apply(random_blocks(qtype, shape, from_bytes=True)))
    x = np.ones((1, 2048), np.float32)
    model(X=x)
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        model(X=x)
        times.append(time.perf_counter() - t0)
    assert np.median(times) < 5e-3, f"{qtype.name}: {np.median(times) * 1e3:.1f} ms"
