"""Pick the layout of a GGUF tensor from its type, shape and role in the graph.

================  ===========================================  ============================
ggml type         role "matmul" / "embedding" (2-D)            role "dense", or not 2-D
================  ===========================================  ============================
plain types       the table of :mod:`pullweights.gguf.plain`: F32 viewed; F16, BF16, F64
                  dequantized to float32 for matrices; integer types refused as matrices
quantized         MatMulNBits layout (exact; embeddings gather  dequantize to float32
                  rows of the same parts and unpack them)
Q8_1, Q8_K, Q1_0  UnsupportedError                              UnsupportedError
================  ===========================================  ============================

The LLM loaders (``loaders/weights.py``) use exactly this choice, and ``pullweights
inspect`` names it (:func:`layout_name`), so what inspect shows is what a load builds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from pullweights.dtypes import DataType
from pullweights.errors import UnsupportedError
from pullweights.gguf.layouts.dequant import DequantizeTransform, can_dequantize
from pullweights.gguf.layouts.formats import block_format
from pullweights.gguf.layouts.matmul_nbits import MatMulNBitsTransform
from pullweights.gguf.plain import plain_type
from pullweights.weights import Transform

__all__ = ["Role", "choose_transform", "layout_name", "raw_dtype", "tensor_role"]

Role = Literal["matmul", "embedding", "dense"]

_T = GGMLQuantizationType
_SHORT = {"float32": "f32", "float16": "f16", "int8": "i8", "int32": "i32", "int64": "i64"}


def raw_dtype(ggml_type: GGMLQuantizationType) -> DataType | None:
    """The data type a tensor of ``ggml_type`` is viewed as without a transform, if any."""
    plain = plain_type(ggml_type)
    return None if plain is None else plain.view


def choose_transform(
    ggml_type: GGMLQuantizationType, shape: Sequence[int], role: Role
) -> Transform | None:
    """The transform that makes a GGUF tensor ready for its role (None: view the bytes as-is).

    Args:
        ggml_type: the tensor's ggml type.
        shape: numpy-order shape (innermost last; ``(n_out, n_in)`` for a weight matrix).
        role: ``"matmul"`` (``Y = X @ W^T``), ``"embedding"`` (row lookup, possibly also a
            tied output head) or ``"dense"`` (used as a plain array; the graph casts it).

    Raises:
        UnsupportedError: no layout handles ``ggml_type`` in this role; the message names
            the type.

    Example::

        t = choose_transform(GGMLQuantizationType.Q4_K, (2048, 2048), "matmul")
        t.describe()  # 'MatMulNBits 4-bit b32 + mins (exact)'
    """
    t = GGMLQuantizationType(ggml_type)
    if role not in ("matmul", "embedding", "dense"):
        raise ValueError(f"role must be matmul, embedding or dense, not {role!r}")
    plain = plain_type(t)
    if plain is not None:
        if role == "dense" and plain.view is not None:
            return None
        if plain.view == "float32":
            return None
        if plain.kind == "float":
            return DequantizeTransform(t, shape)
        if role == "dense":
            why = f"pullweights has no {plain.numpy.name} data type"
        else:
            why = "an integer tensor cannot be a weight matrix"
        raise UnsupportedError(f"ggml type {t.name} is not supported as {role} ({why})")
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
    *,
    tied_head: bool = False,
) -> str:
    """Short description of what a load builds for a tensor, for ``pullweights inspect``.

    The role comes from the tensor's name (:func:`tensor_role`) and the layout from
    :func:`choose_transform`, the choice loads make. Without ``shape`` a matrix is assumed
    2-D. ``tied_head``: the embedding table is also the output head (a file without
    ``output.weight``). Examples: ``"MatMulNBits 4-bit b32 + mins (exact)"``,
    ``"Gather + unpack 8-bit b32 exact"`` (an embedding: rows of the MatMulNBits parts
    are gathered and only they are dequantized), ``"view f32"``, ``"dequant f32"``,
    ``"unsupported IQ9_X"``.
    """
    t = GGMLQuantizationType(ggml_type)
    role = tensor_role(tensor_name)
    block = GGML_QUANT_SIZES[t][0]
    dims = tuple(shape) if shape is not None else ((1, block) if role != "dense" else (block,))
    try:
        transform = choose_transform(t, dims, role)
    except UnsupportedError:
        return f"unsupported {t.name}"
    if transform is None:
        view = raw_dtype(t)
        assert view is not None
        return f"view {_SHORT[view]}"
    assert isinstance(transform, MatMulNBitsTransform | DequantizeTransform)
    described = transform.describe()
    if isinstance(transform, MatMulNBitsTransform) and role == "embedding":
        lookup = "Gather + unpack " + described.removeprefix("MatMulNBits ")
        return f"{described}; {lookup}" if tied_head else lookup
    if t == _T.BF16:
        described += " (from bf16)"
    return described
