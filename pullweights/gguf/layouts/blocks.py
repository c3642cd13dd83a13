"""What a ggml block format looks like once unpacked, and the small numpy pieces unpackers use.

Every format this package repacks is described by one :class:`BlockFormat`: its ggml block
geometry, the sub-block that shares one scale (the ``MatMulNBits`` block size) and an
``unpack`` function. ``unpack`` takes ``uint8[n_blocks, type_size]`` (whole ggml blocks, any
number of rows of a tensor) and returns :class:`Unpacked`: one unsigned integer code per
weight, in weight order (or, for 4-bit formats, codes already packed for ``MatMulNBits``),
and per-sub-block float32 scales and, for formats with a float offset, mins, such that,
computed in float32 exactly like ``gguf.quants`` does::

    w = (code - zero_point) * scale - min        # min only where BlockFormat.has_mins

Unpackers are vectorised (reshape to blocks, ``view(np.float16)``, nibble unpack by broadcast
shift) and never loop over elements in Python.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from gguf import GGMLQuantizationType

from pullweights.errors import IntegrityError

__all__ = [
    "BlockFormat",
    "as_rows",
    "Unpacked",
    "f16_field",
    "nibbles",
    "repack_planes",
    "row_groups",
    "split_bits",
    "storage_bits",
]

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

_NIBBLE_SHIFTS = np.array([0, 4], dtype=np.uint8)


class Unpacked(NamedTuple):
    """Integer codes and per-sub-block parameters of a run of ggml blocks.

    ``codes``: ``uint8[n_blocks, block_elems]``, one per weight; or, when ``packed``,
    already packed two per byte in ``MatMulNBits`` order (``uint8[n_blocks, block_elems/2]``,
    4-bit formats whose ggml nibble planes can be rearranged directly). ``scales`` and
    ``mins``: ``float32[n_blocks, block_elems // sub_block]`` (``mins`` None where absent).
    """

    codes: U8
    scales: F32
    mins: F32 | None
    packed: bool = False


@dataclass(frozen=True)
class BlockFormat:
    """How one ggml quant type maps onto integer codes with a scale (and min) per sub-block.

    ``code_bits`` is how many bits the codes need (codes lie in ``[0, 2**code_bits)``);
    ``zero_point`` is the integer subtracted from every code (0 for formats with a min).
    """

    ggml_type: GGMLQuantizationType
    block_elems: int
    type_size: int
    sub_block: int
    code_bits: int
    zero_point: int
    has_mins: bool
    unpack: Callable[[U8], Unpacked]

    @property
    def name(self) -> str:
        return self.ggml_type.name

    @property
    def bits(self) -> int:
        """Bit width of the ``MatMulNBits`` layout (see :func:`storage_bits`)."""
        return storage_bits(self.code_bits, self.sub_block)


def storage_bits(code_bits: int, sub_block: int) -> int:
    """Bit width of the ``MatMulNBits`` layout for codes of ``code_bits`` bits.

    onnxruntime's CPU kernel takes 2, 4 and 8 bits; 2-bit runs on its fast path only with
    block size 32 (measured: 2048x2048, M=1, accuracy_level 4: 0.14 ms at block 32 against
    10-15 ms at block 16 or 256), so narrower codes are widened to 4 bits otherwise.
    """
    if code_bits <= 2 and sub_block == 32:
        return 2
    if code_bits <= 4:
        return 4
    return 8


def f16_field(blocks: U8, start: int) -> F32:
    """The float16 stored at byte ``start`` of every block, as ``float32[n_blocks, 1]``."""
    return blocks[:, start : start + 2].view(np.float16).astype(np.float32)


def nibbles(packed: U8, group: int) -> U8:
    """Split bytes into nibbles the ggml way: per ``group`` bytes, all low nibbles then all high.

    ``packed`` is ``uint8[n, m]`` with ``m`` a multiple of ``group``; returns ``uint8[n, 2*m]``.
    """
    n = packed.shape[0]
    out = packed.reshape(n, -1, 1, group) >> _NIBBLE_SHIFTS.reshape(1, 1, 2, 1)
    out &= np.uint8(0x0F)
    return out.reshape(n, -1)


_WORDS: dict[int, type[np.unsignedinteger[Any]]] = {2: np.uint16, 4: np.uint32, 8: np.uint64}


@functools.cache
def _plane_table(bits: int, shift: int) -> np.ndarray:
    """Lookup table for :func:`repack_planes`: for two bytes ``a | b << 8`` of a ggml plane of
    ``bits``-bit fields, one output byte per field ``f`` (``field_f(a) << shift |
    field_f(b) << (shift + 4)``), the bytes of all fields packed in one word so the lookup
    is a 1-D gather of 2, 4 or 8 bytes."""
    v = np.arange(1 << 16, dtype=np.uint16)
    a, b = v & 0xFF, v >> 8
    mask = (1 << bits) - 1
    fields = [
        (((a >> (f * bits)) & mask) << shift) | (((b >> (f * bits)) & mask) << (shift + 4))
        for f in range(8 // bits)
    ]
    table: np.ndarray = np.stack(fields, axis=-1).astype(np.uint8)
    return table.view(_WORDS[8 // bits]).reshape(-1)


def repack_planes(planes: U8, bits: int, group: int, shift: int = 0) -> U8:
    """ggml bit planes straight to ``MatMulNBits`` 4-bit order, without unpacking codes.

    Per ``group`` bytes ggml stores element ``f * group + j`` in field ``f`` (bits
    ``f*bits .. f*bits+bits-1``) of byte ``j`` (nibbles: ``bits=4``; ``qs`` of Q2_K/Q3_K:
    ``bits=2``; ``hmask``: ``bits=1``). ``MatMulNBits`` 4-bit wants elements ``2j`` and
    ``2j+1`` in the low and high nibble of byte ``j``; ``shift`` places the field inside the
    nibble (to OR several planes together). One table lookup per byte pair was the fastest
    numpy formulation measured (~1.5x shift-and-mask on strided views).
    """
    n = planes.shape[0]
    pairs = np.ascontiguousarray(planes).view(np.uint16).reshape(n, -1, group // 2)
    # np.take releases the GIL, fancy indexing did not scale over threads (measured)
    out = np.take(_plane_table(bits, shift), pairs).view(np.uint8)
    out = out.reshape(n, pairs.shape[1], group // 2, 8 // bits)
    return out.transpose(0, 1, 3, 2).reshape(n, -1)


def split_bits(packed: U8, bits: int, group: int) -> U8:
    """Split bytes into ``8 // bits`` fields the ggml way (lowest field of every byte first).

    Per ``group`` bytes, field 0 of each byte comes first, then field 1, and so on: the order
    ggml uses for 2-bit (``qs``) and 1-bit (``qh``, ``hmask``) planes.
    """
    n = packed.shape[0]
    per_byte = 8 // bits
    shifts = np.arange(0, 8, bits, dtype=np.uint8).reshape(1, 1, per_byte, 1)
    out = packed.reshape(n, -1, 1, group) >> shifts
    out &= np.uint8((1 << bits) - 1)
    return out.reshape(n, -1)


def row_groups(n_rows: int, row_bytes: int, target_bytes: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` row ranges of about ``target_bytes`` of input each (at least one row)."""
    step = max(1, target_bytes // max(1, row_bytes))
    for start in range(0, n_rows, step):
        yield start, min(n_rows, start + step)


def as_rows(raw: npt.NDArray[np.uint8], n: int, row_bytes: int, what: str) -> U8:
    """``raw`` as ``uint8[n, row_bytes]`` (a view when contiguous), checking its length."""
    flat = np.asarray(raw).reshape(-1)
    if flat.dtype != np.uint8:
        flat = flat.view(np.uint8)
    if flat.size != n * row_bytes:
        raise IntegrityError(
            f"{what} tensor of {n} rows x {row_bytes} bytes: got {flat.size} bytes, "
            f"expected {n * row_bytes}"
        )
    return flat.reshape(n, row_bytes)
