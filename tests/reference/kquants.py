"""Simple encoders for the K-quant formats gguf-py can only decode (Q4_K, Q6_K).

They are not llama.cpp's error-minimising quantizers: scales come from each sub-block's
range, which is all a test fixture needs. The byte layout is the one
``gguf.quants.dequantize`` reads, so a round trip through it is the check.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

QK_K = 256

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]


def _blocks(rows: F32, name: str) -> tuple[npt.NDArray[np.float64], int]:
    if rows.ndim != 2 or rows.shape[1] % QK_K:
        raise ValueError(f"{name}: rows {rows.shape} need a last dim that is a multiple of {QK_K}")
    return rows.astype(np.float64).reshape(-1, QK_K), rows.shape[0]


def _safe_inverse(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.divide(1.0, x, out=np.zeros_like(x), where=x != 0)


def quantize_q6_k(rows: F32) -> U8:
    """Encode float rows ``(n, k)`` as Q6_K bytes ``(n, k // 256 * 210)``.

    Block: ``ql[128]`` low nibbles, ``qh[64]`` high 2 bits, ``scales[16]`` int8, ``d`` f16;
    value ``= d * scales[j] * (q - 32)`` over 16 sub-blocks of 16.
    """
    x, n_rows = _blocks(rows, "Q6_K")
    n = x.shape[0]
    sub = x.reshape(n, 16, 16)
    sub_scale = np.abs(sub).max(axis=-1) / 31.0  # (n, 16)
    d = (sub_scale.max(axis=-1) / 127.0).astype(np.float16)  # (n,)
    sc = np.clip(np.rint(sub_scale * _safe_inverse(d.astype(np.float64))[:, None]), 0, 127)
    eff = d.astype(np.float64)[:, None] * sc  # (n, 16)
    signed = np.clip(np.rint(sub * _safe_inverse(eff)[..., None]), -32, 31)
    q = (signed + 32).astype(np.uint8).reshape(n, 2, 2, 64)  # [half, nibble, byte]
    low = q & 0x0F
    ql = (low[:, :, 0, :] | (low[:, :, 1, :] << 4)).reshape(n, 128)
    high = (q >> 4).reshape(n, 2, 4, 32)  # [half, 2-bit group, byte]
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    qh = np.bitwise_or.reduce(high << shifts, axis=2).reshape(n, 64)
    out = np.concatenate(
        [ql, qh, sc.astype(np.int8).view(np.uint8), d.reshape(n, 1).view(np.uint8)], axis=1
    )
    return out.reshape(n_rows, -1)


def quantize_q4_k(rows: F32) -> U8:
    """Encode float rows ``(n, k)`` as Q4_K bytes ``(n, k // 256 * 144)``.

    Block: ``d`` f16, ``dmin`` f16, 12 bytes of packed 6-bit scales and mins, ``qs[128]``;
    value ``= d * sc[j] * q - dmin * m[j]`` over 8 sub-blocks of 32, ``q`` in 0..15.
    """
    x, n_rows = _blocks(rows, "Q4_K")
    n = x.shape[0]
    sub = x.reshape(n, 8, 32)
    mins = np.maximum(-sub.min(axis=-1), 0.0)  # (n, 8), offset subtracted back
    scales = (sub.max(axis=-1) + mins) / 15.0
    d = (scales.max(axis=-1) / 63.0).astype(np.float16)
    dmin = (mins.max(axis=-1) / 63.0).astype(np.float16)
    sc = np.clip(np.rint(scales * _safe_inverse(d.astype(np.float64))[:, None]), 0, 63)
    mn = np.clip(np.ceil(mins * _safe_inverse(dmin.astype(np.float64))[:, None]), 0, 63)
    eff = d.astype(np.float64)[:, None] * sc
    off = dmin.astype(np.float64)[:, None] * mn
    q = np.clip(np.rint((sub + off[..., None]) * _safe_inverse(eff)[..., None]), 0, 15)
    q = q.astype(np.uint8).reshape(n, 4, 2, 32)  # [pair of sub-blocks, nibble, byte]
    qs = (q[:, :, 0, :] | (q[:, :, 1, :] << 4)).reshape(n, 128)
    sc8, mn8 = sc.astype(np.uint8), mn.astype(np.uint8)
    packed = np.concatenate(
        [
            sc8[:, :4] | ((sc8[:, 4:] >> 4) << 6),
            mn8[:, :4] | ((mn8[:, 4:] >> 4) << 6),
            (sc8[:, 4:] & 0x0F) | ((mn8[:, 4:] & 0x0F) << 4),
        ],
        axis=1,
    )
    out = np.concatenate(
        [d.reshape(n, 1).view(np.uint8), dmin.reshape(n, 1).view(np.uint8), packed, qs], axis=1
    )
    return out.reshape(n_rows, -1)
