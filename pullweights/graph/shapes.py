"""Shape arithmetic over static and symbolic dimensions, with errors that name the op."""

from __future__ import annotations

from collections.abc import Sequence

from pullweights.descriptor import Dim, DimLike, Shape
from pullweights.errors import GraphError

__all__ = ["broadcast_shapes", "dims_equal", "normalize_axis", "same_dim"]


def dims_equal(a: DimLike, b: DimLike) -> bool:
    """True when two dimensions are known to be equal at build time."""
    return a == b


def same_dim(op: str, what: str, a: DimLike, b: DimLike) -> DimLike:
    """Return the dimension shared by ``a`` and ``b``, or raise naming the op."""
    if dims_equal(a, b):
        return a
    raise GraphError(f"{op}: {what} must match, got {a!r} and {b!r}")


def broadcast_shapes(op: str, *shapes: Shape) -> Shape:
    """Numpy-style broadcasting; a symbolic dim broadcasts only with 1 or itself."""
    rank = max(len(s) for s in shapes)
    out: list[DimLike] = []
    for axis in range(rank):
        dim: DimLike = 1
        for shape in shapes:
            index = axis - (rank - len(shape))
            if index < 0:
                continue
            d = shape[index]
            if d == 1:
                continue
            if dim == 1:
                dim = d
            elif not dims_equal(dim, d):
                listed = ", ".join(str(list(s)) for s in shapes)
                raise GraphError(f"{op}: shapes {listed} cannot be broadcast (axis {axis})")
        out.append(dim)
    return tuple(out)


def normalize_axis(op: str, axis: int, rank: int) -> int:
    """Turn a possibly negative axis into ``0 <= axis < rank`` or raise."""
    if not -rank <= axis < rank:
        raise GraphError(f"{op}: axis {axis} is out of range for rank {rank}")
    return axis % rank


def static_size(shape: Sequence[DimLike]) -> int | None:
    """Element count when every dim is static, else ``None``."""
    total = 1
    for d in shape:
        if isinstance(d, Dim):
            return None
        total *= d
    return total
