"""Layout transforms: GGUF tensor bytes (any ggml type) -> arrays onnxruntime consumes directly.

Work from a tensor's ggml type, its numpy-order shape ``(N, K)`` (``K`` innermost) and its raw
bytes; nothing here reads files. :func:`choose_transform` picks, per tensor and role:

* :class:`MatMulNBitsTransform`: an exact ``com.microsoft.MatMulNBits`` layout (parts
  ``B``, ``scales``, ``zero_points`` and, for formats with a float min, ``mins``) for every
  quantized type with integer codes: linear formats (Q4_0 ... Q8_0, K-quants, TQ) and
  codebook formats (IQ*, MXFP4, NVFP4, stored as 8-bit codes). The same bytes are the
  ``com.microsoft.GatherBlockQuantized`` layout of an embedding table (:func:`gather_spec`).
* :class:`DequantizeTransform`: float32 (or float16) in row groups, the fallback.
* None: F32 / F16 / integer tensors are viewed as they are.

Formats with a per-block min (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K) use the exact split
``MatMulNBits(X, q, d, zp=0) - blocksum(X) @ mins^T`` (see
:mod:`~pullweights.gguf.layouts.matmul_nbits` for the measured alternatives).
"""

from __future__ import annotations

from pullweights.gguf.layouts.blocks import BlockFormat, Unpacked
from pullweights.gguf.layouts.choose import (
    Role,
    choose_transform,
    layout_name,
    raw_dtype,
    tensor_role,
)
from pullweights.gguf.layouts.dequant import DequantizeTransform, can_dequantize
from pullweights.gguf.layouts.formats import FORMATS, block_format
from pullweights.gguf.layouts.gather import GatherSpec, gather_rows, gather_spec
from pullweights.gguf.layouts.matmul_nbits import MatMulNBitsTransform

__all__ = [
    "FORMATS",
    "BlockFormat",
    "DequantizeTransform",
    "GatherSpec",
    "MatMulNBitsTransform",
    "Role",
    "Unpacked",
    "block_format",
    "can_dequantize",
    "choose_transform",
    "gather_rows",
    "gather_spec",
    "layout_name",
    "raw_dtype",
    "tensor_role",
]
