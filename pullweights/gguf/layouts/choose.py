"""Pick the layout of a GGUF tensor from its type, shape and role in the graph.

================  ===========================================  ============================
ggml type         role "matmul" / "embedding" (2-D)            role "dense", or not 2-D
================  ===========================================  ============================
F32, F16          None: a zero-copy view                       None: a zero-copy view
I8, I32, I64      None: a zero-copy view                       None: a zero-copy view
BF16, F64         dequantize to float32                        dequantize to float32
quantized         MatMulNBits layout (exact; also the           dequantize to float32
                  GatherBlockQuantized layout for embeddings)
Q8_1, Q8_K, Q1_0  UnsupportedError                              UnsupportedError
================  ===========================================  ============================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from gguf import GGMLQuantizationType

from pullweights.dtypes import DataType
from pullweights.errors import UnsupportedError
from pullweights.gguf.layouts.dequant import DequantizeTransform, can_dequantize
from pullweights.gguf.layouts.formats import block_format
from pullweights.gguf.layouts.matmul_nbits import MatMulNBitsTransform
from pullweights.weights import Transform

__all__ = ["Role", "choose_transform", "layout_name", "raw_dtype", "tensor_role"]

Role = Literal["matmul", "embedding", "dense"]

_T = GGMLQuantizationType
_VIEWS: dict[GGMLQuantizationType, DataType] = {
    _T.F32: "float32",
    _T.F16: "float16",
    _T.I8: "int8",
    _T.I32: "int32",
    _T.I64: "int64",
}
_SHORT = {"float32": "f32", "float16": "f16", "int8": "i8", "int32": "i32", "int64": "i64"}


def raw_dtype(ggml_type: GGMLQuantizationType) -> DataType | None:
    """The data type a tensor of ``ggml_type`` is viewed as without a transform, if any."""
    return _VIEWS.get(GGMLQuantizationType(ggml_type))


def choose_transform(
    ggml_type: GGMLQuantizationType, shape: Sequence[int], role: Role
) -> Transform | None:
    """The transform that makes a GGUF tensor ready for its role (None: view the bytes as-is).

    Args:
        ggml_type: the tensor's ggml type.
        shape: numpy-order shape (innermost last; ``(n_out, n_in)`` for a weight matrix).
        role: ``"matmul"`` (``Y = X @ W^T``), ``"embedding"`` (row lookup, possibly also a
            tied output head) or ``"dense"`` (used as a plain float array).

    Raises:
        UnsupportedError: no layout handles ``ggml_type``; the message names it.

    Example::

        t = choose_transform(GGMLQuantizationType.Q4_K, (2048, 2048), "matmul")
        t.describe()  # 'MatMulNBits 4-bit b32 + mins (exact)'
    """
    t = GGMLQuantizationType(ggml_type)
    if role not in ("matmul", "embedding", "dense"):
        raise ValueError(f"role must be matmul, embedding or dense, not {role!r}")
    if t in _VIEWS:
        return None
    if role != "dense" and len(shape) == 2 and block_format(t) is not None:
        return MatMulNBitsTransform(t, shape)
    if can_dequantize(t):
        return DequantizeTransform(t, shape)
    raise UnsupportedError(f"ggml type {t.name} is not supported (no layout can read it)")


def tensor_role(tensor_name: str) -> Role:
    """The role of a tensor in llama.cpp naming: lookups, matrices, everything else dense."""
    base = tensor_name.rsplit(".", 1)
    if base[-1] != "weight" or "norm" in tensor_name or "rope" in tensor_name:
        return "dense"
    if tensor_name.startswith(("token_embd.", "per_layer_token_embd.")):
        return "embedding"
    return "matmul"


def layout_name(
    ggml_type: GGMLQuantizationType,
    tensor_name: str,
    shape: Sequence[int] | None = None,
) -> str:
    """Short description of the layout a tensor gets, for ``pullweights inspect``.

    The role comes from the tensor's name (:func:`tensor_role`); without ``shape`` a
    matrix is assumed 2-D. Examples: ``"MatMulNBits 4-bit b32 + mins (exact)"``,
    ``"GatherBlockQuantized 8-bit b32 exact"``, ``"view f32"``, ``"dequant f32"``,
    ``"unsupported IQ9_X"``.
    """
    t = GGMLQuantizationType(ggml_type)
    role = tensor_role(tensor_name)
    view = raw_dtype(t)
    if view is not None:
        return f"view {_SHORT[view]}"
    fmt = block_format(t)
    if role != "dense" and fmt is not None and (shape is None or len(shape) == 2):
        kind = "GatherBlockQuantized" if role == "embedding" else "MatMulNBits"
        extra = " + mins (exact)" if fmt.has_mins else " exact"
        return f"{kind} {fmt.bits}-bit b{fmt.sub_block}{extra}"
    if can_dequantize(t):
        return "dequant f32" if t != _T.BF16 else "dequant f32 (from bf16)"
    return f"unsupported {t.name}"
