"""Repack a GGUF quantized weight into ``com.microsoft.MatMulNBits`` inputs, exactly.

A GGUF weight of numpy shape ``(N, K)`` (``N`` outputs, ``K`` inputs innermost, rows of whole
ggml blocks) becomes the parts

* ``B``: ``uint8[N, n_blocks, block_size * bits / 8]``: code ``j`` of a block at bit offset
  ``j * bits``, least significant first (onnxruntime requires ``B`` to be 3-D);
* ``scales``: ``float32[N, n_blocks]`` (onnxruntime also accepts it flat);
* ``zero_points``: ``uint8[N, ceil(n_blocks * bits / 8)]``, packed like ``B``, padding 0;
* ``mins``: ``float32[N, n_blocks]``, only for formats with a float min (``has_mins``),

with ``w[n, b*block_size + j] = (code - zero_point) * scales[n, b] - mins[n, b]``, equal bit for
bit to ``gguf.quants.dequantize``. ``block_size`` is the format's scale sub-block (16 or 32),
so any ``K`` of whole ggml blocks works. Widths: 4-bit for codes of up to 4 bits (Q4_*, Q4_K,
Q3_K with zp 4, Q2_K), 8-bit for 5 to 8 bits and codebooks, 2-bit for ternary (TQ*, block 32).

Formats with a per-block min (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K: ``w = d*q - m``) have no integer
zero point. They use the exact split, zero points 0 and the min term as a small float product::

    Xs = ReduceSum(Reshape(X, [M, n_blocks, block_size]), axes=[-1])      # [M, n_blocks]
    Y  = Gemm(Xs, mins, MatMulNBits(X, B, scales, zero_points), alpha=-1, beta=1, transB=1)

(``Gemm`` is 2-D: flatten leading dims of ``X`` to ``M`` first.) ``Xs`` can be shared by all
matmuls reading the same ``X`` (q/k/v, gate/up). Do not ``Transpose`` ``mins`` in the graph:
onnxruntime constant-folds ops on initializers by reading their declared data, and an
initializer fed through ``add_initializer`` has none (session creation fails);
``Gemm(transB=1)`` needs no transpose.

Measured (K = N = 2048, random valid blocks, one thread, onnxruntime 1.31, accuracy_level
4, M = 1; weight error: ``max|w' - w| / max|w|``; output error: ``max|Y - X W^T|`` over
``max(|X| |W|^T)``), ``benchmarks/bench_transforms.py``:

=====  ====================  ======  ============  =======  ==========
type   layout                B/w     weight error  M=1 ms   out error
=====  ====================  ======  ============  =======  ==========
Q4_K   exact split (chosen)  0.766   0             0.108    5.1e-4
Q4_K   requantize 8-bit      1.156   1.9e-3        0.073    5.6e-4
Q4_K   float zero point      0.750   8.0e-8 [1]_   8.0      3.4e-3
Q2_K   exact split (chosen)  1.031   0             0.114    3.7e-4
Q2_K   requantize 8-bit      1.156   1.9e-3        0.089    6.3e-4
Q2_K   float zero point      1.000   8.7e-8 [1]_   7.6      1.7e-2
Q5_K   exact split (chosen)  1.281   0             0.083    5.7e-4
Q5_K   requantize 8-bit      1.156   1.9e-3        0.073    5.7e-4
Q5_K   float zero point      1.250   7.8e-8        fails [2]_
=====  ====================  ======  ============  =======  ==========

(fp32 MatMul on dequantized weights, 4 B/w: 0.81 ms.)

.. [1] over blocks with a nonzero scale: a block with scale 0 and a min cannot be written.
.. [2] onnxruntime takes float zero points for 2 and 4 bits only.

The split is exact, keeps Q4_K and Q2_K at 4 bits (11-34 % fewer bytes than 8-bit), and the
``mins`` term (``n_blocks`` multiply-adds per output, 1/32 or 1/16 of the matmul, three small
nodes) costs 0.01-0.035 ms at M=1 (within noise at M=32); float zero points run onnxruntime's
dequantize-every-call path (~100x slower). For Q5_K and Q5_1 the split is 10 % larger than
an 8-bit requantization but stays exact, like every other layout here.

onnxruntime runs ``MatMulNBits`` fast only with ``B``, ``scales`` and ``zero_points`` as
constant initializers and prepacking on, and 8-bit and 2-bit only with ``accuracy_level=4``
(activations quantized to int8 per block; 2048x2048 M=1: 0.07-0.17 ms; accuracy_level 0:
0.3-0.9 ms at 4-bit, 10-80 ms at 8-bit): hence the recommended
:attr:`MatMulNBitsTransform.accuracy_level` of 4. Prepacking makes a private copy
(Q8_0 262144 x 640: 221 MiB for a 185 MiB payload).

``B`` viewed as ``[N, n_blocks * block_size * bits / 8]`` (same bytes) with the same
``scales`` and ``zero_points`` is also the ``data`` of ``com.microsoft.GatherBlockQuantized``
(see :mod:`~pullweights.gguf.layouts.gather`): one payload serves a tied embedding and
output head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from gguf import GGMLQuantizationType

from pullweights.descriptor import TensorDescriptor
from pullweights.errors import FormatError, UnsupportedError
from pullweights.gguf.layouts.blocks import F32, U8, as_rows, row_groups
from pullweights.gguf.layouts.formats import block_format
from pullweights.weights import Transform

__all__ = [
    "DEFAULT_GROUP_BYTES",
    "MatMulNBitsTransform",
    "nbits_outputs",
    "pack_codes",
    "unpack_codes",
]

#: Input bytes transformed per row group (bounds temporaries to a few times this).
DEFAULT_GROUP_BYTES = 1 << 18


def pack_codes(codes: U8, bits: int, out: U8) -> None:
    """Pack ``codes`` (``uint8[rows, m]``, each < ``2**bits``) LSB-first into ``out``.

    ``out`` is ``uint8[rows, m * bits // 8]`` (any shape with that many bytes per row).
    """
    rows = codes.shape[0]
    flat = out.reshape(rows, -1)
    if bits == 8:
        np.copyto(flat, codes)
        return
    per_byte = 8 // bits
    c = codes.reshape(rows, -1, per_byte)
    np.copyto(flat, c[..., 0])
    for i in range(1, per_byte):
        flat |= c[..., i] << np.uint8(i * bits)


def unpack_codes(packed: U8, bits: int) -> U8:
    """Inverse of :func:`pack_codes`: ``uint8[rows, m]`` codes from ``uint8[rows, m*bits/8]``."""
    rows = packed.shape[0]
    flat = packed.reshape(rows, -1)
    if bits == 8:
        return flat.copy()
    shifts = np.arange(0, 8, bits, dtype=np.uint8)
    out = (flat[..., None] >> shifts) & np.uint8((1 << bits) - 1)
    return out.reshape(rows, -1)


def nbits_outputs(
    n: int, n_blocks: int, bits: int, block_size: int, has_mins: bool
) -> dict[str, TensorDescriptor]:
    """The parts of an ``N``-row ``MatMulNBits`` layout (see the module docs)."""
    blob = block_size * bits // 8
    zp_bytes = (n_blocks * bits + 7) // 8
    outputs = {
        "B": TensorDescriptor("uint8", (n, n_blocks, blob)),
        "scales": TensorDescriptor("float32", (n, n_blocks)),
        "zero_points": TensorDescriptor("uint8", (n, zp_bytes)),
    }
    if has_mins:
        outputs["mins"] = TensorDescriptor("float32", (n, n_blocks))
    return outputs


class MatMulNBitsTransform(Transform):
    """GGUF quantized weight bytes -> exact ``MatMulNBits`` (and ``GatherBlockQuantized``) parts.

    Args:
        ggml_type: the tensor's ggml type (one listed in
            :data:`~pullweights.gguf.layouts.formats.FORMATS`).
        shape: numpy-order shape ``(N, K)``: ``N`` outputs, ``K`` inputs (innermost).
        group_bytes: input bytes per row group.

    Attributes ``k``, ``n``, ``bits``, ``block_size``, ``n_blocks``, ``has_mins``,
    ``zero_point`` and ``accuracy_level`` (recommended) give the graph what it needs.

    Raises:
        UnsupportedError: the type has no exact layout.
        FormatError: the shape is not 2-D or its rows are not whole blocks.

    Example::

        t = MatMulNBitsTransform(GGMLQuantizationType.Q4_K, (2048, 2048))
        parts = t.apply(raw)  # {"B", "scales", "zero_points", "mins"}
    """

    name = "gguf.matmul_nbits"
    version = 1

    def __init__(
        self,
        ggml_type: GGMLQuantizationType,
        shape: Sequence[int],
        *,
        group_bytes: int = DEFAULT_GROUP_BYTES,
    ) -> None:
        fmt = block_format(ggml_type)
        type_name = GGMLQuantizationType(ggml_type).name
        if fmt is None:
            raise UnsupportedError(f"ggml type {type_name} has no exact MatMulNBits layout")
        if len(shape) != 2:
            raise FormatError(f"{type_name} tensor of shape {tuple(shape)}: MatMulNBits needs 2-D")
        n, k = (int(d) for d in shape)
        if n < 1 or k < 1 or k % fmt.block_elems:
            raise FormatError(
                f"{type_name} tensor of shape {(n, k)}: rows of {k} elements are not whole "
                f"{fmt.block_elems}-element blocks"
            )
        self.format = fmt
        self.ggml_type = fmt.ggml_type
        self.n, self.k = n, k
        self.bits = fmt.bits
        self.block_size = fmt.sub_block
        self.n_blocks = k // fmt.sub_block
        self.zero_point = fmt.zero_point
        self.has_mins = fmt.has_mins
        self.accuracy_level = 4
        self.group_bytes = group_bytes
        self.row_bytes = k // fmt.block_elems * fmt.type_size
        self._outputs = nbits_outputs(n, self.n_blocks, self.bits, self.block_size, self.has_mins)

    @property
    def outputs(self) -> Mapping[str, TensorDescriptor]:
        return self._outputs

    @property
    def params(self) -> str:
        return (
            f"{self.ggml_type.name} N={self.n} K={self.k} bits={self.bits} "
            f"block={self.block_size} zp={self.zero_point} mins={self.has_mins}"
        )

    def describe(self) -> str:
        """Short human description, e.g. ``MatMulNBits 4-bit b32 + mins (exact)``."""
        extra = " + mins (exact)" if self.has_mins else " exact"
        return f"MatMulNBits {self.bits}-bit b{self.block_size}{extra}"

    @property
    def rows(self) -> tuple[int, int]:
        return self.n, self.row_bytes

    def apply(self, raw: npt.NDArray[np.uint8]) -> dict[str, np.ndarray]:
        """Repack the tensor's raw GGUF bytes (any shape, ``N * row_bytes`` bytes)."""
        rows = as_rows(raw, self.n, self.row_bytes, self.ggml_type.name)
        out = {name: np.empty(d.static_shape, d.numpy_dtype) for name, d in self.outputs.items()}
        for r0, r1 in row_groups(self.n, self.row_bytes, self.group_bytes):
            self._fill(rows[r0:r1], {name: arr[r0:r1] for name, arr in out.items()})
        return out

    def apply_rows(
        self, raw: npt.NDArray[np.uint8], start: int, stop: int
    ) -> dict[str, np.ndarray]:
        """Rows ``start:stop`` of every part from those rows' raw GGUF bytes."""
        count = stop - start
        rows = as_rows(raw, count, self.row_bytes, self.ggml_type.name)
        out = {
            name: np.empty((count, *d.static_shape[1:]), d.numpy_dtype)
            for name, d in self.outputs.items()
        }
        for r0, r1 in row_groups(count, self.row_bytes, self.group_bytes):
            self._fill(rows[r0:r1], {name: arr[r0:r1] for name, arr in out.items()})
        return out

    def _fill(self, rows: U8, out: Mapping[str, np.ndarray]) -> None:
        """Repack whole raw ``rows`` into the same rows of every part (``out``: views)."""
        fmt = self.format
        count = rows.shape[0]
        blocks = np.ascontiguousarray(rows).reshape(-1, fmt.type_size)
        with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf scales pass through
            u = fmt.unpack(blocks)
        b_out = out["B"]
        if u.packed:
            b_out[...] = u.codes.reshape(b_out.shape)
        else:
            pack_codes(u.codes.reshape(count, -1), self.bits, b_out)
        out["scales"][...] = u.scales.reshape(count, -1)
        if u.mins is not None:
            out["mins"][...] = u.mins.reshape(count, -1)
        out["zero_points"][...] = self._packed_zero_points()

    def _packed_zero_points(self) -> U8:
        per_byte = 8 // self.bits
        padded = -(-self.n_blocks // per_byte) * per_byte
        zp = np.zeros((1, padded), np.uint8)
        zp[:, : self.n_blocks] = self.zero_point
        row = np.empty((1, padded // per_byte), np.uint8)
        pack_codes(zp, self.bits, row)
        return row

    def dequantize(self, parts: Mapping[str, np.ndarray]) -> F32:
        """The weights ``float32[N, K]`` the parts encode (numpy reference of the layout)."""
        codes = unpack_codes(parts["B"].reshape(self.n, -1), self.bits)
        codes = codes.reshape(self.n, self.n_blocks, self.block_size)
        zp = unpack_codes(parts["zero_points"], self.bits)[:, : self.n_blocks]
        scales = parts["scales"][..., None]
        w: F32 = (codes.astype(np.float32) - zp[..., None].astype(np.float32)) * scales
        if self.has_mins:
            w = w - parts["mins"][..., None]
        return w.reshape(self.n, self.k)
