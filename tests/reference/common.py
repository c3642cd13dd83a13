"""Numeric building blocks shared by the numpy reference architectures.

Everything computes in float64 (weights are the float32 values dequantized from the GGUF
file and are upcast chunk by chunk inside :func:`linear`). Shapes follow one convention:
a sequence of activations is ``(seq, features)``; per-head tensors are
``(seq, heads, head_dim)``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
Bool = npt.NDArray[np.bool_]

RopeStyle = Literal["interleaved", "neox"]

# Rows of a weight matrix upcast to float64 at once in :func:`linear`: bounds the
# temporary to ~80 MB for a 640-wide embedding of the real gemma3 vocabulary.
_LINEAR_ROW_CHUNK = 16384


def linear(x: F64, weight: F32, bias: F32 | None = None) -> F64:
    """``x @ weight.T (+ bias)`` in float64, ``weight`` in GGUF/PyTorch layout ``(out, in)``.

    Uses ``einsum`` without BLAS on purpose: a fixed summation order (results do not depend
    on BLAS threads) and no OpenBLAS spin-waiting, which on a busy 2-core machine made
    small float64 matmuls ~50x slower.
    """
    out = np.empty((x.shape[0], weight.shape[0]), dtype=np.float64)
    for start in range(0, weight.shape[0], _LINEAR_ROW_CHUNK):
        chunk = weight[start : start + _LINEAR_ROW_CHUNK].astype(np.float64)
        out[:, start : start + chunk.shape[0]] = np.einsum("ij,kj->ik", x, chunk, optimize=False)
    if bias is not None:
        out += bias.astype(np.float64)
    return out


def rms_norm(x: F64, weight: F32, eps: float) -> F64:
    """RMSNorm over the last axis: ``x / sqrt(mean(x^2) + eps) * weight``.

    For gemma the GGUF weight already holds HF's ``1 + w``, so the same formula applies.
    """
    normed = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return normed * weight.astype(np.float64)


def silu(x: F64) -> F64:
    """SiLU (swish): ``x * sigmoid(x)``."""
    return x / (1.0 + np.exp(-x))


def gelu_tanh(x: F64) -> F64:
    """GELU with the tanh approximation (HF ``gelu_pytorch_tanh``, ggml ``gelu``)."""
    inner = np.sqrt(2.0 / np.pi) * (x + 0.044715 * x * x * x)
    out: F64 = 0.5 * x * (1.0 + np.tanh(inner))
    return out


def rope_angles(
    n_positions: int,
    n_rot: int,
    base: float,
    *,
    position_scale: float = 1.0,
    freq_factors: F32 | None = None,
) -> F64:
    """Angles ``(n_positions, n_rot // 2)``: ``pos * scale * base^(-2i/n_rot) / factor_i``."""
    inv_freq = base ** (-np.arange(0, n_rot, 2, dtype=np.float64) / n_rot)
    if freq_factors is not None:
        inv_freq = inv_freq / freq_factors.astype(np.float64)
    positions = np.arange(n_positions, dtype=np.float64) * position_scale
    return positions[:, None] * inv_freq[None, :]


def apply_rope(x: F64, angles: F64, style: RopeStyle) -> F64:
    """Rotate the first ``2 * angles.shape[1]`` features of each head of ``x`` (seq, heads, dim).

    ``interleaved`` pairs features ``(2i, 2i+1)`` (llama.cpp ``LLAMA_ROPE_TYPE_NORM``, used
    for llama GGUFs whose Q/K rows the converter permuted); ``neox`` pairs ``(i, i + n_rot/2)``
    (HF ``rotate_half``; llama.cpp ``LLAMA_ROPE_TYPE_NEOX``, used by qwen2 and gemma3).
    """
    half = angles.shape[1]
    n_rot = 2 * half
    cos = np.cos(angles)[:, None, :]
    sin = np.sin(angles)[:, None, :]
    out = x.copy()
    if style == "interleaved":
        a, b = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
        out[..., 0:n_rot:2] = a * cos - b * sin
        out[..., 1:n_rot:2] = a * sin + b * cos
    else:
        a, b = x[..., :half], x[..., half:n_rot]
        out[..., :half] = a * cos - b * sin
        out[..., half:n_rot] = a * sin + b * cos
    return out


def causal_mask(seq: int, window: int | None = None) -> Bool:
    """Boolean ``(seq, seq)`` mask, True where query ``q`` may attend key ``k``.

    Causal: ``k <= q``. With a sliding ``window`` also ``q - k < window``: each query sees
    the last ``window`` positions including itself (HF ``sliding_window_overlay`` and
    llama.cpp ``LLAMA_SWA_TYPE_STANDARD``: masked when ``q - k >= n_swa``).
    """
    q = np.arange(seq)[:, None]
    k = np.arange(seq)[None, :]
    allowed = k <= q
    if window is not None:
        allowed &= (q - k) < window
    return allowed


def attention(q: F64, k: F64, v: F64, mask: Bool, scale: float) -> F64:
    """Grouped-query softmax attention.

    ``q`` (seq, n_head, d), ``k`` (seq, n_kv, d), ``v`` (seq, n_kv, dv). Query head ``h``
    uses key/value head ``h // (n_head // n_kv)`` (HF ``repeat_kv``, llama.cpp broadcast).
    Returns ``(seq, n_head * dv)``.
    """
    n_head, n_kv = q.shape[1], k.shape[1]
    if n_head % n_kv:
        raise ValueError(f"head_count {n_head} is not a multiple of head_count_kv {n_kv}")
    group = n_head // n_kv
    k = np.repeat(k, group, axis=1)
    v = np.repeat(v, group, axis=1)
    scores = np.einsum("qhd,khd->hqk", q, k) * scale
    scores = np.where(mask[None, :, :], scores, -np.inf)
    scores -= scores.max(axis=-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(axis=-1, keepdims=True)
    out: F64 = np.einsum("hqk,khd->qhd", probs, v)
    return out.reshape(out.shape[0], -1)
