"""Tensors that stay onnxruntime values across computes (KV caches, reused inputs)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from pullweights.descriptor import TensorDescriptor
from pullweights.dtypes import from_numpy
from pullweights.errors import ComputeError

__all__ = ["Tensor"]


class Tensor:
    """A CPU tensor owned by pullweights and wrapped as an ``OrtValue`` without a copy.

    ``write`` and ``read`` copy; ``dispatch`` binds the value itself, so a cache bound as
    both an input and an output is updated in place.
    """

    __slots__ = ("_array", "descriptor", "ortvalue")

    def __init__(self, array: np.ndarray, ortvalue: ort.OrtValue | None = None) -> None:
        self._array = array
        try:
            dtype = from_numpy(array.dtype)
        except ValueError as exc:
            raise ComputeError(f"Tensor: {exc}") from None
        self.descriptor = TensorDescriptor(dtype, array.shape)
        self.ortvalue = (
            ortvalue if ortvalue is not None else ort.OrtValue.ortvalue_from_numpy(array)
        )

    @classmethod
    def create(cls, value: TensorDescriptor | np.ndarray) -> Tensor:
        """A zero-filled tensor of a static descriptor, or a copy of an array.

        Raises:
            ComputeError: the descriptor has symbolic dims, or the array's dtype is not
                supported.
        """
        if isinstance(value, TensorDescriptor):
            if not value.is_static:
                raise ComputeError(f"Tensor.create: {value} has symbolic dims; give sizes")
            return cls(np.zeros(value.static_shape, dtype=value.numpy_dtype))
        return cls(np.array(value, copy=True, order="C"))

    @classmethod
    def wrap_output(cls, value: ort.OrtValue) -> Tensor:
        """Adopt an OrtValue that onnxruntime allocated (a compute output)."""
        return cls(value.numpy(), value)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._array.shape)

    def write(self, data: np.ndarray) -> None:
        """Copy ``data`` (same shape, castable dtype) into the tensor."""
        data = np.asarray(data)
        if data.shape != self._array.shape:
            raise ComputeError(
                f"Tensor.write: shape {data.shape} != tensor shape {self._array.shape}"
            )
        self._array[...] = data

    def read(self) -> np.ndarray:
        """A copy of the tensor's contents."""
        return self._array.copy()

    def view(self) -> np.ndarray:
        """A read-write numpy view of the tensor's memory (no copy)."""
        return self._array

    def __repr__(self) -> str:
        return f"Tensor({self.descriptor})"
