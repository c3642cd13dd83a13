"""Tensor element types: the names users write, and their numpy and ONNX forms."""

from __future__ import annotations

import warnings
from typing import Literal, get_args

import numpy as np
from onnx import TensorProto

from pullweights.errors import GraphError

__all__ = [
    "DATA_TYPES",
    "DataType",
    "cast_exact",
    "check_dtype",
    "from_numpy",
    "to_numpy",
    "to_onnx",
]

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
    """Return ``dtype`` if it names a supported type, else raise
    :class:`~pullweights.errors.GraphError` (a ``ValueError``)."""
    if not isinstance(dtype, str) or dtype not in _NUMPY:
        raise GraphError(f"unknown data type {dtype!r}; expected one of {', '.join(DATA_TYPES)}")
    return dtype  # type: ignore[return-value]


def to_numpy(dtype: DataType) -> np.dtype[np.generic]:
    """The numpy dtype of a pullweights data type."""
    return _NUMPY[dtype]


def to_onnx(dtype: DataType) -> int:
    """The ``onnx.TensorProto`` element type of a pullweights data type."""
    return _ONNX[dtype]


def from_numpy(dtype: np.dtype[np.generic] | type) -> DataType:
    """The pullweights data type of a numpy dtype; ``GraphError`` (a ``ValueError``) if
    unsupported."""
    name = np.dtype(dtype).name
    return check_dtype(name)


def cast_exact(array: np.ndarray, dtype: DataType) -> np.ndarray:
    """``array`` converted to ``dtype``, refusing conversions that change values.

    Into an integer or bool type every value must convert exactly (``1000.5`` or ``300``
    into int8, NaN into int32 are refused); into a float type a finite value must stay
    finite (``1e10`` into float16 is refused), rounding is allowed.

    Raises:
        ValueError: naming the first value that does not convert.
    """
    target = to_numpy(dtype)
    if array.dtype == target:
        return array
    if array.dtype.kind not in "biuf":
        raise ValueError(f"cannot convert {array.dtype} values to {dtype}")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        converted = array.astype(target)
        if target.kind == "f":
            bad = np.isfinite(array) & ~np.isfinite(converted)
        else:
            back = converted.astype(array.dtype)
            bad = back != array
            if array.dtype.kind == "f":
                bad |= ~np.isfinite(array)
                if target.kind in "iu":  # float values past the int range wrap silently
                    info = np.iinfo(target)  # type: ignore[type-var]
                    bad |= (array < info.min) | (array > info.max)
    if bool(np.any(bad)):
        first = array[bad].flat[0].item()
        raise ValueError(f"value {first!r} ({array.dtype}) does not convert exactly to {dtype}")
    return converted
