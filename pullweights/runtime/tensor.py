"""Tensors that stay onnxruntime values across computes (KV caches, reused inputs)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from pullweights.allocation import check_allocation
from pullweights.descriptor import TensorDescriptor
from pullweights.dtypes import cast_exact, from_numpy
from pullweights.errors import ComputeError

__all__ = ["Tensor"]


class Tensor:
    """A CPU tensor owned by pullweights and wrapped as an ``OrtValue`` without a copy.

    ``write`` and ``read`` copy; ``dispatch`` binds the value itself, so a cache bound as
    both an input and an output is updated in place.
    """

    __slots__ = ("_array", "descriptor", "ortvalue")

    def __init__(self, array: np.ndarray, ortvalue: ort.OrtValue | None = None) -> None:
        """Wrap ``array`` (not copied; use :meth:`create` for a copy).

        Raises:
            ComputeError: ``array`` is not a numpy array of a supported dtype.
        """
        if not isinstance(array, np.ndarray):
            raise ComputeError(f"Tensor: expected a numpy array, got {type(array).__name__}")
        try:
            dtype = from_numpy(array.dtype)
        except ValueError as exc:
            raise ComputeError(f"Tensor: {exc}") from None
        self._array = array
        self.descriptor = TensorDescriptor(dtype, array.shape)
        self.ortvalue = (
            ortvalue if ortvalue is not None else ort.OrtValue.ortvalue_from_numpy(array)
        )

    @classmethod
    def create(cls, value: TensorDescriptor | np.ndarray) -> Tensor:
        """A zero-filled tensor of a static descriptor, or a copy of an array.

        Raises:
            ComputeError: the descriptor has symbolic dims or needs more memory than one
                allocation may take (:func:`~pullweights.allocation.memory_limit`), or the
                value is not an array of a supported dtype.
        """
        if isinstance(value, TensorDescriptor):
            if not value.is_static:
                raise ComputeError(f"Tensor.create: {value} has symbolic dims; give sizes")
            check_allocation(value.nbytes, f"Tensor.create: {value}", ComputeError)
            try:
                return cls(np.zeros(value.static_shape, dtype=value.numpy_dtype))
            except MemoryError as exc:
                raise ComputeError(f"Tensor.create: {value}: {exc}") from None
        try:
            array = np.array(value, copy=True, order="C")
        except (ValueError, TypeError, OverflowError) as exc:
            raise ComputeError(f"Tensor.create: {exc}") from None
        return cls(array)

    @classmethod
    def wrap_output(cls, value: ort.OrtValue) -> Tensor:
        """Adopt an OrtValue that onnxruntime allocated (a compute output)."""
        return cls(value.numpy(), value)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._array.shape)

    def write(self, data: np.ndarray) -> None:
        """Copy ``data`` (same shape; values the tensor's dtype holds exactly) into the tensor.

        Raises:
            ComputeError: another shape, values numpy cannot make an array of, or values
                that do not convert exactly (``1000.5`` into int8, NaN into int32).
        """
        try:
            array = np.asarray(data)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ComputeError(f"Tensor.write: {exc}") from None
        if array.shape != self._array.shape:
            raise ComputeError(
                f"Tensor.write: shape {array.shape} != tensor shape {self._array.shape}"
            )
        try:
            self._array[...] = cast_exact(array, self.descriptor.dtype)
        except ValueError as exc:  # cast_exact's, or GraphError's (a ValueError)
            raise ComputeError(f"Tensor.write into {self.descriptor}: {exc}") from None

    def read(self) -> np.ndarray:
        """A copy of the tensor's contents."""
        return self._array.copy()

    def view(self) -> np.ndarray:
        """A read-write numpy view of the tensor's memory (no copy)."""
        return self._array

    def __repr__(self) -> str:
        return f"Tensor({self.descriptor})"
