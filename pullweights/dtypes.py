"""Tensor element types: the names users write, and their numpy and ONNX forms."""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
from onnx import TensorProto

__all__ = ["DataType", "DATA_TYPES", "check_dtype", "from_numpy", "to_numpy", "to_onnx"]

DataType = Literal["float32", "float16", "int64", "int32", "uint32", "int8", "uint8", "bool"]
DATA_TYPES: tuple[str, ...] = get_args(DataType)

_NUMPY: dict[str, np.dtype[np.generic]] = {name: np.dtype(name) for name in DATA_TYPES}
_ONNX: dict[str, int] = {
    "float32": TensorProto.FLOAT,
    "float16": TensorProto.FLOAT16,
    "int64": TensorProto.INT64,
    "int32": TensorProto.INT32,
    "uint32": TensorProto.UINT32,
    "int8": TensorProto.INT8,
    "uint8": TensorProto.UINT8,
    "bool": TensorProto.BOOL,
}


def check_dtype(dtype: str) -> DataType:
    """Return ``dtype`` if it names a supported type, else raise ``ValueError``."""
    if dtype not in _NUMPY:
        raise ValueError(f"unknown data type {dtype!r}; expected one of {', '.join(DATA_TYPES)}")
    return dtype  # type: ignore[return-value]


def to_numpy(dtype: DataType) -> np.dtype[np.generic]:
    """The numpy dtype of a pullweights data type."""
    return _NUMPY[dtype]


def to_onnx(dtype: DataType) -> int:
    """The ``onnx.TensorProto`` element type of a pullweights data type."""
    return _ONNX[dtype]


def from_numpy(dtype: np.dtype[np.generic] | type) -> DataType:
    """The pullweights data type of a numpy dtype; ``ValueError`` if unsupported."""
    name = np.dtype(dtype).name
    return check_dtype(name)
