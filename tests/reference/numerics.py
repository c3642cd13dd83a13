"""How the reference rounds: exact float64 (the default), or emulating llama.cpp's CPU
backend so the two can be compared to float32 precision.

ggml's CPU matmul converts the activations to the weight type's ``vec_dot_type`` before
the dot product (F16 -> F16, BF16 -> BF16, Q4_0/Q5_0/Q8_0 -> Q8_0, Q4_1/Q5_1 -> Q8_1,
K-quants -> Q8_K), and its GELU reads a float16 table. :class:`LlamaCppNumerics` applies
the same roundings, which turns "close to llama.cpp" into "equal to llama.cpp": a test
that separates the reference's own mistakes from llama.cpp's approximations.
"""

from __future__ import annotations

import gguf
import numpy as np

from .common import F64, gelu_tanh, linear
from .gguf_model import GGUFModel

QT = gguf.GGMLQuantizationType

_Q8_0_ACTIVATIONS = {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL", "MXFP4"}


class Numerics:
    """Exact float64 numerics on the dequantized float32 weights."""

    name = "exact"

    def activation(self, x: F64, weight_type: str) -> F64:
        """The activations as the matmul with a ``weight_type`` weight sees them."""
        return x

    def gelu_tanh(self, x: F64) -> F64:
        """GELU, tanh approximation."""
        return gelu_tanh(x)

    def linear(self, model: GGUFModel, x: F64, weight: str, bias: str | None = None) -> F64:
        """``x @ W.T (+ b)`` for the named tensors of ``model`` (bias optional in the file)."""
        w = model.tensor(weight)
        b = None if bias is None else model.optional(bias)
        return linear(self.activation(x, model.tensor_types[weight]), w, b)


EXACT = Numerics()


def round_q8_0(x: F64) -> F64:
    """ggml ``quantize_row_q8_0`` then back: blocks of 32, ``d = amax/127`` stored as f16."""
    x32 = x.astype(np.float32)
    q = gguf.quants.quantize(x32, QT.Q8_0)
    return gguf.quants.dequantize(q, QT.Q8_0).astype(np.float64).reshape(x.shape)


def round_q8_k(x: F64) -> F64:
    """ggml ``quantize_row_q8_K`` then back: blocks of 256, ``iscale = -127/max`` where
    ``max`` is the value of largest magnitude (sign kept), ``q = min(127, rint(iscale*x))``,
    ``d = 1/iscale`` kept in float32."""
    blocks = x.astype(np.float32).reshape(-1, 256)
    idx = np.abs(blocks).argmax(axis=-1)
    peak = np.take_along_axis(blocks, idx[:, None], axis=-1)
    with np.errstate(divide="ignore"):
        iscale = np.where(peak == 0, np.float32(0), np.float32(-127.0) / peak).astype(np.float32)
    q = np.minimum(np.float32(127), np.rint(iscale * blocks))
    with np.errstate(divide="ignore"):
        d = np.where(iscale == 0, np.float32(0), np.float32(1.0) / iscale).astype(np.float32)
    return (q * d).astype(np.float64).reshape(x.shape)


def round_bf16(x: F64) -> F64:
    """float32 -> bfloat16 (round to nearest even) -> float64."""
    bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return rounded.astype(np.uint32).view(np.float32).astype(np.float64)


class LlamaCppNumerics(Numerics):
    """Numerics of llama.cpp's CPU backend (ggml): activation rounding per weight type and
    the float16-table GELU. Attention, norms and softmax stay exact (ggml computes them in
    float32; the runner keeps the KV cache in float32).

    Not emulated: Q4_1/Q5_1 (ggml adds ``m * f16(d * sum(q))`` with the block sum rounded to
    f16) and some detail of the F16 matmul path (~3e-4 remains on a 1-layer model). Other
    types match llama.cpp to ~1e-6 until a float32-vs-float64 difference flips one rounded
    activation, after which that position (and, through attention, later ones) differ by
    ~1e-2.
    """

    name = "llamacpp"

    def activation(self, x: F64, weight_type: str) -> F64:
        if weight_type == "F32":
            return x.astype(np.float32).astype(np.float64)
        if weight_type == "F16":
            return x.astype(np.float16).astype(np.float64)
        if weight_type == "BF16":
            return round_bf16(x)
        if weight_type in _Q8_0_ACTIVATIONS:
            return round_q8_0(x)
        if weight_type.endswith("_K") or weight_type.startswith(("IQ", "TQ")):
            return round_q8_k(x)
        raise NotImplementedError(f"no llama.cpp activation rounding known for {weight_type}")

    def gelu_tanh(self, x: F64) -> F64:
        """ggml ``GGML_GELU_FP16``: input rounded to f16, table value is f16(gelu(f16 x));
        0 below -10 and identity above 10."""
        x16 = x.astype(np.float16).astype(np.float64)
        table = gelu_tanh(x16).astype(np.float16).astype(np.float64)
        return np.where(x <= -10.0, 0.0, np.where(x >= 10.0, x, table))


LLAMACPP = LlamaCppNumerics()
