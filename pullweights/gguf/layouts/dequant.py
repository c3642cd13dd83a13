"""Dequantize a GGUF tensor to a plain float array, in row groups: the layout of last resort.

Used for tensors a graph needs as ordinary floats (``role="dense"``: norms, biases,
anything not a matmul or a lookup), for matmul weights that are not 2-D, and for float
types that are not a zero-copy view (``BF16``, ``F64``). Every type ``gguf.quants`` can
dequantize is accepted; each row group goes through ``gguf.quants.dequantize`` (the
reference itself, vectorised), so the output equals it exactly, written straight into the
preallocated result so temporaries stay a few times ``group_bytes``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants

from pullweights.descriptor import TensorDescriptor
from pullweights.errors import FormatError, UnsupportedError
from pullweights.gguf.layouts.blocks import U8, as_rows, row_groups
from pullweights.gguf.plain import plain_type
from pullweights.weights import Transform

__all__ = ["DequantizeTransform", "can_dequantize"]

_T = GGMLQuantizationType


def _float_view(ggml_type: GGMLQuantizationType) -> np.dtype[np.generic] | None:
    """The numpy dtype of a plain float type dequantized by a dtype conversion (F32, F16,
    F64; BF16's bits go through ``gguf.quants``), from :mod:`pullweights.gguf.plain`."""
    plain = plain_type(ggml_type)
    return plain.numpy if plain is not None and plain.numpy.kind == "f" else None


def can_dequantize(ggml_type: GGMLQuantizationType) -> bool:
    """Whether :class:`DequantizeTransform` handles ``ggml_type`` (integer types: no)."""
    t = GGMLQuantizationType(ggml_type)
    if _float_view(t) is not None:
        return True
    plain = plain_type(t)
    return (plain is None or plain.kind == "float") and hasattr(quants, t.name)


class DequantizeTransform(Transform):
    """GGUF tensor bytes -> part ``"data"``: ``float32`` (or ``float16``) of the numpy shape.

    Args:
        ggml_type: any float or quantized type ``gguf.quants`` can dequantize.
        shape: numpy-order shape (innermost last), any rank >= 1.
        dtype: ``"float32"`` (exact) or ``"float16"`` (rounded from float32).
        group_bytes: input bytes per row group.

    Raises:
        UnsupportedError: the type cannot be dequantized.
        FormatError: the innermost dimension is not a whole number of blocks.

    Example::

        t = DequantizeTransform(GGMLQuantizationType.BF16, (640,))
        t.apply(raw)["data"]  # float32[640]
    """

    name = "gguf.dequantize"
    version = 1

    def __init__(
        self,
        ggml_type: GGMLQuantizationType,
        shape: Sequence[int],
        dtype: Literal["float32", "float16"] = "float32",
        *,
        group_bytes: int = 1 << 18,
    ) -> None:
        t = GGMLQuantizationType(ggml_type)
        if not can_dequantize(t):
            raise UnsupportedError(f"ggml type {t.name} cannot be dequantized")
        if dtype not in ("float32", "float16"):
            raise ValueError(f"dtype must be float32 or float16, not {dtype!r}")
        dims = tuple(int(d) for d in shape)
        block, type_size = GGML_QUANT_SIZES[t]
        if not dims or min(dims) < 0 or dims[-1] % block:
            raise FormatError(
                f"{t.name} tensor of shape {dims}: the innermost dimension is not a whole "
                f"number of {block}-element blocks"
            )
        self.ggml_type = t
        self.shape = dims
        self.dtype: Literal["float32", "float16"] = dtype
        self.group_bytes = group_bytes
        self.n_rows = int(np.prod(dims[:-1], dtype=np.int64))
        self.row_bytes = dims[-1] // block * type_size
        self._outputs = {"data": TensorDescriptor(dtype, dims)}

    @property
    def outputs(self) -> Mapping[str, TensorDescriptor]:
        return self._outputs

    @property
    def params(self) -> str:
        return f"{self.ggml_type.name} shape={self.shape} dtype={self.dtype}"

    def describe(self) -> str:
        """Short human description, e.g. ``dequant f32``."""
        return f"dequant {'f32' if self.dtype == 'float32' else 'f16'}"

    def apply(self, raw: npt.NDArray[np.uint8]) -> dict[str, np.ndarray]:
        """Dequantize the tensor's raw GGUF bytes (any shape, the tensor's byte size)."""
        rows = as_rows(raw, self.n_rows, self.row_bytes, self.ggml_type.name)
        out = np.empty((self.n_rows, self.shape[-1]), self.dtype)
        with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf in the file pass through
            for r0, r1 in row_groups(self.n_rows, self.row_bytes, self.group_bytes):
                out[r0:r1] = self._rows(np.ascontiguousarray(rows[r0:r1]))
        return {"data": out.reshape(self.shape)}

    @property
    def rows(self) -> tuple[int, int]:
        return self.n_rows, self.row_bytes

    def apply_rows(
        self, raw: npt.NDArray[np.uint8], start: int, stop: int
    ) -> dict[str, np.ndarray]:
        """Rows ``start:stop`` (of the shape flattened to ``[rows, innermost]``)."""
        count = stop - start
        rows = as_rows(raw, count, self.row_bytes, self.ggml_type.name)
        out = np.empty((count, self.shape[-1]), self.dtype)
        with np.errstate(invalid="ignore", over="ignore"):
            for r0, r1 in row_groups(count, self.row_bytes, self.group_bytes):
                out[r0:r1] = self._rows(np.ascontiguousarray(rows[r0:r1]))
        return {"data": out}

    def _rows(self, group: U8) -> np.ndarray:
        view = _float_view(self.ggml_type)
        if view is not None:
            return group.view(view)
        result: np.ndarray = quants.dequantize(group, self.ggml_type)
        return result
