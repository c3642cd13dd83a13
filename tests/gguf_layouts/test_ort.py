"""onnxruntime consumes the layouts: MatMulNBits (+ mins split) and GatherBlockQuantized.

Reference: ``X @ W^T`` in float64 with ``W = gguf.quants.dequantize(raw)``. Tolerances:

* accuracy_level 0 (float32 throughout): the standard dot-product bound
  ``|err| <= gamma * (|X| @ (|W_q| + |mins|)^T)`` elementwise with ``gamma = 2 K 2**-24``
  (``W_q`` the part before the mins, since the split subtracts two float32 sums);
* accuracy_level 4: onnxruntime quantizes each block of ``block_size`` activations to int8
  with scale ``max|x_block| / 127``, an error of at most ``max|x_block| / 254`` per
  activation, so ``|err| <= sum_blocks max|x_block| / 254 * sum_(i in block) |w_i|``, plus
  the float32 bound above.
* GatherBlockQuantized: ``(q - zp) * scale (- min)`` is one rounding, like the reference:
  exact, allowing 1 ulp (``rtol 2**-23``).
"""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType, quants

from pullweights.gguf.layouts import FORMATS, MatMulNBitsTransform, gather_rows

from .blockdata import random_blocks
from .ort_graphs import gather_model, matmul_model

TYPES = sorted(FORMATS, key=lambda t: t.name)


def _case(qtype: GGMLQuantizationType, shape: tuple[int, int], seed: int = 0):  # type: ignore[no-untyped-def]
    raw = random_blocks(qtype, shape, seed=seed, from_bytes=True)
    t = MatMulNBitsTransform(qtype, shape)
    parts = t.apply(raw)
    return t, parts, quants.dequantize(raw, qtype)


def _bounds(t: MatMulNBitsTransform, parts, x: np.ndarray, w: np.ndarray):  # type: ignore[no-untyped-def]
    ax = np.abs(x).astype(np.float64)
    aw = np.abs(w).astype(np.float64)
    if t.has_mins:
        wq = t.dequantize({**parts, "mins": np.zeros_like(parts["mins"])})
        mins = np.repeat(np.abs(parts["mins"]), t.block_size, axis=1)
        aw_split = np.abs(wq).astype(np.float64) + mins
    else:
        aw_split = aw
    float_bound = 2 * t.k * 2.0**-24 * (ax @ aw_split.T) + 1e-30
    m = x.shape[0]
    xmax = ax.reshape(m, t.n_blocks, t.block_size).max(-1)  # [M, nb]
    wsum = aw.reshape(t.n, t.n_blocks, t.block_size).sum(-1)  # [N, nb]
    int8_bound = (xmax / 254) @ wsum.T
    return float_bound, int8_bound


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_matmul_nbits_matches_reference(qtype: GGMLQuantizationType) -> None:
    block = FORMATS[qtype].block_elems
    rng = np.random.default_rng(1)
    for seed, shape in enumerate([(1, block), (5, block * 3)]):
        t, parts, w = _case(qtype, shape, seed)
        x = rng.standard_normal((3, t.k)).astype(np.float32)
        ref = x.astype(np.float64) @ w.T.astype(np.float64)
        float_bound, int8_bound = _bounds(t, parts, x, w)
        exact = matmul_model(t, parts, accuracy_level=0)(X=x)
        assert np.all(np.abs(exact - ref) <= float_bound), np.abs(exact - ref).max()
        fast = matmul_model(t, parts, accuracy_level=4)(X=x)
        assert np.all(np.abs(fast - ref) <= int8_bound * 1.001 + float_bound)


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_gather_block_quantized_matches_reference(qtype: GGMLQuantizationType) -> None:
    block = FORMATS[qtype].block_elems
    t, parts, w = _case(qtype, (7, block * 3), seed=4)
    ids = np.array([0, 6, 3, 3, 1], np.int64)
    got = gather_model(t, parts)(ids=ids)
    np.testing.assert_allclose(got, w[ids], rtol=2.0**-23, atol=0)
    np.testing.assert_array_equal(gather_rows(t, parts, ids), w[ids])
    np.testing.assert_array_equal(gather_rows(t, parts, ids.reshape(5, 1)), w[ids][:, None])
