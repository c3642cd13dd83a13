"""The dequantize fallback equals gguf.quants.dequantize for every type it accepts."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants

from pullweights.errors import FormatError, IntegrityError, UnsupportedError
from pullweights.gguf.layouts import DequantizeTransform, can_dequantize

from .blockdata import F16_FIELDS, random_blocks

T = GGMLQuantizationType
QUANT_TYPES = sorted(
    (GGMLQuantizationType[n] for n in F16_FIELDS if can_dequantize(GGMLQuantizationType[n])),
    key=lambda t: t.name,
)


@pytest.mark.parametrize("qtype", QUANT_TYPES, ids=lambda t: t.name)
def test_quantized_types_in_row_groups(qtype: GGMLQuantizationType) -> None:
    block = GGML_QUANT_SIZES[qtype][0]
    shape = (3, 5, block * 3)  # any rank; rows are the leading dims flattened
    raw = random_blocks(qtype, shape, seed=1, from_bytes=True)
    t = DequantizeTransform(qtype, shape, group_bytes=1)  # one row per group
    data = t.apply(raw)["data"]
    assert data.shape == shape and data.dtype == np.float32
    np.testing.assert_array_equal(data, quants.dequantize(raw, qtype))  # exact
    half = DequantizeTransform(qtype, shape, "float16").apply(raw)["data"]
    assert half.dtype == np.float16
    np.testing.assert_array_equal(half, quants.dequantize(raw, qtype).astype(np.float16))


def test_bf16_f16_f32_f64() -> None:
    rng = np.random.default_rng(0)
    values = rng.standard_normal((4, 6)).astype(np.float32)
    bf16 = quants.quantize(values, T.BF16)
    cases = {
        T.BF16: (bf16, quants.dequantize(bf16, T.BF16)),
        T.F16: (values.astype(np.float16).view(np.uint8), values.astype(np.float16)),
        T.F32: (values.view(np.uint8), values),
        T.F64: (values.astype(np.float64).view(np.uint8), values),
    }
    for qtype, (raw, expect) in cases.items():
        got = DequantizeTransform(qtype, (4, 6)).apply(raw)["data"]
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expect.astype(np.float32), err_msg=qtype.name)
    # bf16 is the top half of a float32: exact by construction
    np.testing.assert_array_equal(
        DequantizeTransform(T.BF16, (24,)).apply(bf16.reshape(-1))["data"],
        (bf16.view(np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(-1),
    )


def test_errors() -> None:
    for qtype in (T.Q8_K, T.Q8_1, T.I16):
        with pytest.raises(UnsupportedError, match=qtype.name):
            DequantizeTransform(qtype, (4, 256))
    with pytest.raises(FormatError, match="32-element blocks"):
        DequantizeTransform(T.Q8_0, (4, 48))
    with pytest.raises(IntegrityError, match="got 10 bytes"):
        DequantizeTransform(T.F32, (4,)).apply(np.zeros(10, np.uint8))
