"""Formats whose weights are an integer times a scale, minus an optional min: one unpacker each.

Byte layouts and float operations follow ``gguf.quants`` (ggml's reference) exactly, so the
scales and mins computed here are bit-identical to the ones it multiplies with:

=====  =========  ========  ==========  ============================================
type   sub-block  code      zero point  weight
=====  =========  ========  ==========  ============================================
Q4_0   32         4-bit     8           d * (q - 8)
Q4_1   32         4-bit     0 + min     d * q + m            (min = -m)
Q5_0   32         5-bit     16          d * (q - 16)
Q5_1   32         5-bit     0 + min     d * q + m            (min = -m)
Q8_0   32         8-bit     128         d * int8             (code = int8 + 128)
Q2_K   16         2-bit     0 + min     d*sc * q - dmin*m
Q3_K   16         3-bit     4           d*(sc-32) * (q - 4)  (code = low 2 bits + 4*hmask)
Q4_K   32         4-bit     0 + min     d*sc * q - dmin*m
Q5_K   32         5-bit     0 + min     d*sc * q - dmin*m
Q6_K   16         6-bit     32          d*sc * (q - 32)
TQ1_0  32         2-bit     1           d * (q - 1)          (d per 256, repeated)
TQ2_0  32         2-bit     1           d * (q - 1)          (d per 256, repeated)
=====  =========  ========  ==========  ============================================
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from gguf import GGMLQuantizationType as T

from pullweights.gguf.layouts.blocks import (
    F32,
    U8,
    BlockFormat,
    Unpacked,
    f16_field,
    nibbles,
    repack_planes,
    split_bits,
)

__all__ = ["LINEAR_FORMATS", "k_scale_min"]

QK_K = 256
Unpacker = Callable[[U8], Unpacked]


def _q4_0(b: U8) -> Unpacked:
    return Unpacked(repack_planes(b[:, 2:], 4, 16), f16_field(b, 0), None, packed=True)


def _q4_1(b: U8) -> Unpacked:
    return Unpacked(repack_planes(b[:, 4:], 4, 16), f16_field(b, 0), -f16_field(b, 2), packed=True)


def _five_bit(qh: U8, qs: U8) -> U8:
    high = np.unpackbits(qh, axis=-1, bitorder="little")
    codes = nibbles(qs, 16)
    codes |= high << np.uint8(4)
    return codes


def _q5_0(b: U8) -> Unpacked:
    return Unpacked(_five_bit(b[:, 2:6], b[:, 6:]), f16_field(b, 0), None)


def _q5_1(b: U8) -> Unpacked:
    return Unpacked(_five_bit(b[:, 4:8], b[:, 8:]), f16_field(b, 0), -f16_field(b, 2))


def _q8_0(b: U8) -> Unpacked:
    return Unpacked(b[:, 2:] ^ np.uint8(0x80), f16_field(b, 0), None)


def _q2_k(b: U8) -> Unpacked:
    sc = b[:, :16]
    d = f16_field(b, 80)
    dmin = f16_field(b, 82)
    scales = d * (sc & np.uint8(0x0F)).astype(np.float32)
    mins = dmin * (sc >> np.uint8(4)).astype(np.float32)
    return Unpacked(repack_planes(b[:, 16:80], 2, 32), scales, mins, packed=True)


def _q3_k(b: U8) -> Unpacked:
    n = b.shape[0]
    hmask, qs, packed = b[:, :32], b[:, 32:96], b[:, 96:108]
    d = f16_field(b, 108)
    low = packed[:, :8].reshape(n, 1, 8) >> np.array([0, 4], dtype=np.uint8).reshape(1, 2, 1)
    high = packed[:, 8:].reshape(n, 1, 4) >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 4, 1)
    sc = (low.reshape(n, 16) & np.uint8(0x0F)) | ((high.reshape(n, 16) & np.uint8(0x03)) << 4)
    scales = d * (sc.astype(np.int8) - np.int8(32)).astype(np.float32)
    codes = repack_planes(qs, 2, 32)
    codes |= repack_planes(hmask, 1, 32, shift=2)
    return Unpacked(codes, scales, None, packed=True)


_LOW6 = np.uint32(0x3F3F3F3F)
_LOW4 = np.uint32(0x0F0F0F0F)
_BITS45 = np.uint32(0x30303030)


def k_scale_min(packed: U8) -> tuple[U8, U8]:
    """The eight 6-bit scales and mins of Q4_K / Q5_K blocks (``uint8[n, 12]`` packed).

    Bytes 0-3 hold scales 0-3 (low 6 bits), 4-7 mins 0-3, 8-11 the low 4 bits of scales
    and mins 4-7; the top 2 bits of bytes 0-7 are bits 4-5 of scales and mins 4-7. Worked
    on four bytes at once as uint32.
    """
    n = packed.shape[0]
    w = np.ascontiguousarray(packed).view(np.uint32)
    d, m, md = w[:, 0], w[:, 1], w[:, 2]
    sc = np.empty((n, 2), np.uint32)
    mn = np.empty((n, 2), np.uint32)
    sc[:, 0] = d & _LOW6
    sc[:, 1] = (md & _LOW4) | ((d >> np.uint32(2)) & _BITS45)
    mn[:, 0] = m & _LOW6
    mn[:, 1] = ((md >> np.uint32(4)) & _LOW4) | ((m >> np.uint32(2)) & _BITS45)
    return sc.view(np.uint8), mn.view(np.uint8)


def _k_scales(b: U8) -> tuple[F32, F32]:
    sc, mn = k_scale_min(b[:, 4:16])
    return f16_field(b, 0) * sc.astype(np.float32), f16_field(b, 2) * mn.astype(np.float32)


def _q4_k(b: U8) -> Unpacked:
    scales, mins = _k_scales(b)
    return Unpacked(repack_planes(b[:, 16:], 4, 32), scales, mins, packed=True)


def _q5_k(b: U8) -> Unpacked:
    scales, mins = _k_scales(b)
    codes = nibbles(b[:, 48:], 32)
    codes |= split_bits(b[:, 16:48], 1, 32) << np.uint8(4)
    return Unpacked(codes, scales, mins)


def _q6_k(b: U8) -> Unpacked:
    codes = nibbles(b[:, :128], 64)
    codes |= split_bits(b[:, 128:192], 2, 32) << np.uint8(4)
    d = f16_field(b, 208)
    return Unpacked(codes, d * b[:, 192:208].view(np.int8).astype(np.float32), None)


_POW3 = np.array([1, 3, 9, 27, 81], dtype=np.uint8)


def _ternary_digits(packed: U8, digits: int, group: int) -> U8:
    """TQ1_0's base-3 digits: multiply (wrapping in uint8) then take the top of ``3*x``."""
    n = packed.shape[0]
    x = packed.reshape(n, -1, 1, group) * _POW3[:digits].reshape(1, 1, digits, 1)
    return ((x.reshape(n, -1).astype(np.uint16) * 3) >> 8).astype(np.uint8)


def _tq1_0(b: U8) -> Unpacked:
    qs, qh = b[:, :48], b[:, 48:52]
    codes = np.concatenate(
        [
            _ternary_digits(qs[:, :32], 5, 32),
            _ternary_digits(qs[:, 32:], 5, 16),
            _ternary_digits(qh, 4, 4),
        ],
        axis=-1,
    )
    return Unpacked(codes, np.repeat(f16_field(b, 52), QK_K // 32, axis=1), None)


def _tq2_0(b: U8) -> Unpacked:
    codes = split_bits(b[:, :64], 2, 32)
    return Unpacked(codes, np.repeat(f16_field(b, 64), QK_K // 32, axis=1), None)


def _fmt(
    t: T, elems: int, size: int, sub: int, bits: int, zp: int, mins: bool, fn: Unpacker
) -> tuple[T, BlockFormat]:
    return t, BlockFormat(t, elems, size, sub, bits, zp, mins, fn)


#: Linear formats by ggml type.
LINEAR_FORMATS: dict[T, BlockFormat] = dict(
    [
        _fmt(T.Q4_0, 32, 18, 32, 4, 8, False, _q4_0),
        _fmt(T.Q4_1, 32, 20, 32, 4, 0, True, _q4_1),
        _fmt(T.Q5_0, 32, 22, 32, 5, 16, False, _q5_0),
        _fmt(T.Q5_1, 32, 24, 32, 5, 0, True, _q5_1),
        _fmt(T.Q8_0, 32, 34, 32, 8, 128, False, _q8_0),
        _fmt(T.Q2_K, QK_K, 84, 16, 2, 0, True, _q2_k),
        _fmt(T.Q3_K, QK_K, 110, 16, 3, 4, False, _q3_k),
        _fmt(T.Q4_K, QK_K, 144, 32, 4, 0, True, _q4_k),
        _fmt(T.Q5_K, QK_K, 176, 32, 5, 0, True, _q5_k),
        _fmt(T.Q6_K, QK_K, 210, 16, 6, 32, False, _q6_k),
        _fmt(T.TQ1_0, QK_K, 54, 32, 2, 1, False, _tq1_0),
        _fmt(T.TQ2_0, QK_K, 66, 32, 2, 1, False, _tq2_0),
    ]
)
