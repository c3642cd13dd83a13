"""The one table of plain (non-quantized) GGUF tensor types and what pullweights does with each.

Every other module asks this table: the reader (which types a tensor's bytes may be viewed
as without a transform), the layout chooser (view, dequantize or refuse, per role), the
dequantizer (which types are a dtype conversion) and, through the chooser, the LLM loaders
and ``pullweights inspect``.

=====  ==================  =============  ================================  ==================
type   numpy (storage)     raw view as    role ``dense`` (norms, biases)    matrices, lookups
=====  ==================  =============  ================================  ==================
F32    float32             float32        view                              view
F16    float16             float16        view (the graph casts)            dequantize to f32
BF16   uint16 (its bits)   --             dequantize to f32                 dequantize to f32
F64    float64             --             dequantize to f32                 dequantize to f32
I8     int8                int8           view                              refused
I16    int16               --             refused                           refused
I32    int32               int32          view                              refused
I64    int64               int64          view                              refused
=====  ==================  =============  ================================  ==================

"raw view as" is a pullweights data type (:data:`pullweights.dtypes.DataType`); BF16,
F64 and I16 have none, so their bytes are never handed out as they are. Matrices and
lookups (roles ``matmul`` and ``embedding``) need float32: a float type other than F32
is dequantized once (the result is cached), an integer type is not a weight matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from pullweights.dtypes import DataType

__all__ = ["PLAIN_TYPES", "PlainType", "plain_type"]


@dataclass(frozen=True)
class PlainType:
    """A GGUF type whose elements are stored one by one, as numpy stores them."""

    ggml_type: GGMLQuantizationType
    #: How one element is stored (little-endian); BF16's bits are a uint16.
    numpy: np.dtype[np.generic]
    #: The data type the bytes are viewed as without a transform (None: no such type).
    view: DataType | None
    kind: Literal["float", "int"]

    @property
    def name(self) -> str:
        return self.ggml_type.name


_T = GGMLQuantizationType


def _row(t: GGMLQuantizationType, numpy: str, view: DataType | None) -> PlainType:
    dtype = np.dtype(numpy)
    assert GGML_QUANT_SIZES[t] == (1, dtype.itemsize), t
    kind: Literal["float", "int"] = "int" if t.name.startswith("I") else "float"
    return PlainType(t, dtype, view, kind)


#: Every plain GGUF type, by ggml type (see the module docs).
PLAIN_TYPES: dict[GGMLQuantizationType, PlainType] = {
    p.ggml_type: p
    for p in (
        _row(_T.F32, "<f4", "float32"),
        _row(_T.F16, "<f2", "float16"),
        _row(_T.BF16, "<u2", None),
        _row(_T.F64, "<f8", None),
        _row(_T.I8, "i1", "int8"),
        _row(_T.I16, "<i2", None),
        _row(_T.I32, "<i4", "int32"),
        _row(_T.I64, "<i8", "int64"),
    )
}


def plain_type(ggml_type: GGMLQuantizationType | int) -> PlainType | None:
    """The table row of ``ggml_type``, or None for a quantized (block) type."""
    return PLAIN_TYPES.get(GGMLQuantizationType(ggml_type))
