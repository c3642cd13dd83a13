"""Codebook and grid formats (IQ*, MXFP4, NVFP4) as exact 8-bit codes with a scale per sub-block.

These formats store an index into a table of small integers (``IQ4_NL``'s ``-127..113``,
MXFP4's doubled e2m1 values ``-12..12``, the IQ2/IQ3 sign-and-grid vectors) times a float
scale per sub-block of 16 or 32 weights. Every weight is therefore ``scale * v`` with ``v`` an
integer in ``[-127, 127]``: an 8-bit code ``v + 128`` with zero point 128 reproduces
``gguf.quants.dequantize`` bit for bit, with no float zero point and no requantization.

* IQ4_NL, IQ4_XS, MXFP4, NVFP4: the table lookup is done here directly.
* IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S: the reference dequantizes the group
  of blocks (``gguf.quants``), the scale is recomputed here with the same float32 operations,
  and ``v = rint(w / scale)``. That is exact: ``w`` is ``scale * v`` rounded once, so
  ``w / scale`` is within ``|v| * 2**-23`` of ``v`` (IQ1 uses ``scale / 8`` and ``v`` in
  ``-9..9``, since its weights are ``scale * (grid +- 1/8)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from gguf import GGML_QUANT_SIZES, quants
from gguf import GGMLQuantizationType as T

from pullweights.gguf.layouts.blocks import F32, U8, BlockFormat, Unpacked, f16_field, nibbles

__all__ = ["CODEBOOK_FORMATS"]

QK_K = 256
Unpacker = Callable[[U8], Unpacked]
UInt = npt.NDArray[np.unsignedinteger[Any]]

_IQ4_VALUES = np.array(
    [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int16
)
_FP4_VALUES = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=np.int16)
_IQ4_CODES = (_IQ4_VALUES + 128).astype(np.uint8)
_FP4_CODES = (_FP4_VALUES + 128).astype(np.uint8)


def _iq4_nl(b: U8) -> Unpacked:
    return Unpacked(np.take(_IQ4_CODES, nibbles(b[:, 2:], 16)), f16_field(b, 0), None)


def _iq4_xs(b: U8) -> Unpacked:
    n = b.shape[0]
    high = b[:, 2:4].view(np.uint16) >> np.arange(0, 16, 2, dtype=np.uint16).reshape(1, 8)
    low = b[:, 4:8].reshape(n, 4, 1) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2)
    sc = (low.reshape(n, 8) & np.uint8(0x0F)) | ((high.astype(np.uint8) & np.uint8(3)) << 4)
    scales = f16_field(b, 0) * (sc.astype(np.int8) - np.int8(32)).astype(np.float32)
    return Unpacked(np.take(_IQ4_CODES, nibbles(b[:, 8:], 16)), scales, None)


def _e8m0_half(e: U8) -> F32:
    """ggml_e8m0_to_fp32_half: ``2**(e - 128)``, with the two smallest exponents subnormal."""
    x = e.astype(np.uint32)
    bits = np.where(x < 2, np.uint32(0x00200000) << x, (x - np.uint32(1)) << np.uint32(23))
    return bits.astype(np.uint32).view(np.float32)


def _mxfp4(b: U8) -> Unpacked:
    return Unpacked(np.take(_FP4_CODES, nibbles(b[:, 1:], 16)), _e8m0_half(b[:, :1]), None)


def _ue4m3_half(x: U8) -> F32:
    """Unsigned e4m3 (bias 7) times 1/2; 0 and 0x7F decode to 0 (every value is exact)."""
    exp = (x >> np.uint8(3)).astype(np.int32) & 0xF
    man = (x & np.uint8(7)).astype(np.float32)
    normal = (1.0 + man / 8.0) * np.exp2(exp.astype(np.float32) - 7)
    raw = np.where(exp == 0, man * np.float32(2.0**-9), normal)
    return np.where((x == 0) | (x == 0x7F), np.float32(0), raw * np.float32(0.5)).astype(np.float32)


def _nvfp4(b: U8) -> Unpacked:
    return Unpacked(np.take(_FP4_CODES, nibbles(b[:, 4:], 8)), _ue4m3_half(b[:, :4]), None)


# --- grid formats: reference dequantization divided by the recomputed scale -------------


def _half_steps(d: F32, s: UInt, factor: float) -> F32:
    """``d * (0.5 + s) * factor`` in float32, the IQ2/IQ3 sub-block scale."""
    return d * (np.float32(0.5) + s.astype(np.float32)) * np.float32(factor)


def _nibble_scales(packed: U8) -> U8:
    n = packed.shape[0]
    out = packed.reshape(n, -1, 1) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2)
    return out.reshape(n, -1) & np.uint8(0x0F)


def _iq2_xxs_scale(b: U8) -> F32:
    words = b[:, 2:].view(np.uint32).reshape(b.shape[0], -1, 2)
    return _half_steps(f16_field(b, 0), words[..., 1] >> np.uint32(28), 0.25)


def _iq2_xs_scale(b: U8) -> F32:
    return _half_steps(f16_field(b, 0), _nibble_scales(b[:, 66:74]), 0.25)


def _iq2_s_scale(b: U8) -> F32:
    return _half_steps(f16_field(b, 0), _nibble_scales(b[:, 74:82]), 0.25)


def _iq3_xxs_scale(b: U8) -> F32:
    words = b[:, 66:98].view(np.uint32)
    return _half_steps(f16_field(b, 0), words >> np.uint32(28), 0.5)


def _iq3_s_scale(b: U8) -> F32:
    sc = _nibble_scales(b[:, 106:110])
    return f16_field(b, 0) * (1 + 2 * sc)


def _iq1_s_scale(b: U8) -> F32:
    qh = b[:, 34:50].view(np.uint16)
    dl = f16_field(b, 0) * (2 * ((qh >> np.uint16(12)) & np.uint16(7)) + 1)
    return dl * np.float32(0.125)


def _iq1_m_scale(b: U8) -> F32:
    n = b.shape[0]
    packed = b[:, 48:56].view(np.uint16)
    parts = (packed & np.uint16(0xF000)) >> np.array([12, 8, 4, 0], dtype=np.uint16)
    d_bits = parts[:, 0] | parts[:, 1] | parts[:, 2] | parts[:, 3]
    d = d_bits.view(np.float16).astype(np.float32).reshape(n, 1)
    sc = packed.reshape(n, 4, 1) >> np.array([0, 3, 6, 9], dtype=np.uint16).reshape(1, 1, 4)
    sc = sc.reshape(n, 16) & np.uint16(7)
    scale: F32 = d * (2 * sc + 1) * np.float32(0.125)
    return scale


def _grid(t: T, scale_of: Callable[[U8], F32]) -> Unpacker:
    def unpack(b: U8) -> Unpacked:
        n = b.shape[0]
        scales = scale_of(b)
        w = quants.dequantize(b.reshape(1, -1), t).reshape(n, scales.shape[1], -1)
        s = scales[..., None]
        v = np.divide(w, s, out=np.zeros_like(w), where=s != 0)
        codes = (np.rint(v) + 128).astype(np.uint8).reshape(n, -1)
        return Unpacked(codes, scales, None)

    return unpack


def _fmt(t: T, elems: int, sub: int, fn: Unpacker) -> tuple[T, BlockFormat]:
    size = GGML_QUANT_SIZES[t][1]
    return t, BlockFormat(t, elems, size, sub, 8, 128, False, fn)


_TABLE: list[tuple[str, int, int, Callable[[], Unpacker]]] = [
    ("IQ4_NL", 32, 32, lambda: _iq4_nl),
    ("IQ4_XS", QK_K, 32, lambda: _iq4_xs),
    ("MXFP4", 32, 32, lambda: _mxfp4),
    ("NVFP4", 64, 16, lambda: _nvfp4),
    ("IQ2_XXS", QK_K, 32, lambda: _grid(T.IQ2_XXS, _iq2_xxs_scale)),
    ("IQ2_XS", QK_K, 16, lambda: _grid(T.IQ2_XS, _iq2_xs_scale)),
    ("IQ2_S", QK_K, 16, lambda: _grid(T.IQ2_S, _iq2_s_scale)),
    ("IQ3_XXS", QK_K, 32, lambda: _grid(T.IQ3_XXS, _iq3_xxs_scale)),
    ("IQ3_S", QK_K, 32, lambda: _grid(T.IQ3_S, _iq3_s_scale)),
    ("IQ1_S", QK_K, 32, lambda: _grid(T.IQ1_S, _iq1_s_scale)),
    ("IQ1_M", QK_K, 16, lambda: _grid(T.IQ1_M, _iq1_m_scale)),
]

#: Codebook formats by ggml type (those the installed ``gguf`` knows and can dequantize).
CODEBOOK_FORMATS: dict[T, BlockFormat] = dict(
    _fmt(T[name], elems, sub, make())
    for name, elems, sub, make in _TABLE
    if name in T.__members__ and hasattr(quants, name)
)
