"""Tensor descriptors: a data type and a shape whose dimensions may be symbolic with bounds.

A symbolic dimension (``Dim("seq", 1, 4096)``) follows the bounded dynamic dimension
proposal for WebNN (webmachinelearning/webnn issue 883): the graph compiles once, and
every compute checks the actual size against the bounds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from pullweights.allocation import INT64_MAX
from pullweights.dtypes import DataType, check_dtype, to_numpy
from pullweights.errors import GraphError

__all__ = ["Dim", "DimLike", "Shape", "TensorDescriptor"]

#: Largest size a symbolic dimension may take when no upper bound is given.
UNBOUNDED = 2**62


@dataclass(frozen=True)
class Dim:
    """A named symbolic dimension with inclusive bounds ``min_size <= size <= max_size``.

    Two dims with the same name are the same dimension: every input that uses it must
    have the same size in one compute.
    """

    name: str
    min_size: int = 0
    max_size: int = UNBOUNDED

    def __post_init__(self) -> None:
        """Raises :class:`~pullweights.errors.GraphError` (a ``ValueError``) for a name
        that is not an identifier or bounds that are not ints with
        ``0 <= min <= max < 2**63``."""
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise GraphError(f"dimension name {self.name!r} must be an identifier")
        for bound in (self.min_size, self.max_size):
            if not _is_int(bound):
                raise GraphError(f"dimension {self.name!r}: bound {bound!r} must be an int")
        if not 0 <= self.min_size <= self.max_size <= INT64_MAX:
            raise GraphError(
                f"dimension {self.name!r}: bounds must satisfy 0 <= min <= max < 2**63, "
                f"got {self.min_size}..{self.max_size}"
            )

    def __repr__(self) -> str:
        upper = "" if self.max_size == UNBOUNDED else str(self.max_size)
        return f"{self.name}[{self.min_size}..{upper}]"


DimLike = int | Dim
Shape = tuple[DimLike, ...]


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_shape(shape: Iterable[DimLike]) -> Shape:
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Iterable):
        raise GraphError(f"shape {shape!r} must be a sequence of ints and Dims")
    out: list[DimLike] = []
    for d in shape:
        if isinstance(d, Dim):
            out.append(d)
        elif _is_int(d) and 0 <= d <= INT64_MAX:
            out.append(int(d))
        else:
            raise GraphError(f"dimension {d!r} must be a non-negative int (< 2**63) or a Dim")
    return tuple(out)


@dataclass(frozen=True)
class TensorDescriptor:
    """Data type and shape of a tensor (an input, a weight, an operand)."""

    dtype: DataType
    shape: Shape

    def __init__(self, dtype: str, shape: Sequence[DimLike]) -> None:
        """Raises :class:`~pullweights.errors.GraphError` (a ``ValueError``): an unknown
        dtype, a dimension that is not a non-negative int or a :class:`Dim`, or a static
        shape whose byte size does not fit in int64."""
        object.__setattr__(self, "dtype", check_dtype(dtype))
        object.__setattr__(self, "shape", _check_shape(shape))
        if self.is_static:
            elements = 1
            for d in self.static_shape:
                elements *= d
            if elements * self.numpy_dtype.itemsize > INT64_MAX:
                raise GraphError(
                    f"tensor {self.dtype}{list(self.shape)} would hold "
                    f"{elements * self.numpy_dtype.itemsize} bytes: more than fits in int64"
                )

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        """True when no dimension is symbolic."""
        return all(isinstance(d, int) for d in self.shape)

    @property
    def static_shape(self) -> tuple[int, ...]:
        """The shape as ints; ``GraphError`` (a ``ValueError``) if a dimension is symbolic."""
        if not self.is_static:
            raise GraphError(f"shape {self.shape} has symbolic dimensions")
        return tuple(int(d) for d in self.shape)  # type: ignore[arg-type]

    @property
    def numpy_dtype(self) -> np.dtype[np.generic]:
        return to_numpy(self.dtype)

    @property
    def n_elements(self) -> int:
        """Element count of a static tensor (an exact Python int)."""
        elements = 1
        for d in self.static_shape:
            elements *= d
        return elements

    @property
    def nbytes(self) -> int:
        """Byte size of a static tensor (an exact Python int, < 2**63)."""
        return self.n_elements * self.numpy_dtype.itemsize

    def dims(self) -> list[Dim]:
        """The symbolic dimensions, in order of first appearance."""
        seen: list[Dim] = []
        for d in self.shape:
            if isinstance(d, Dim) and d not in seen:
                seen.append(d)
        return seen

    def __repr__(self) -> str:
        return f"{self.dtype}{list(self.shape)}"
