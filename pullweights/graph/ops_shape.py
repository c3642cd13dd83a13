"""Shape ops: reshape, transpose, concat, split, slice, gather, expand."""

from __future__ import annotations

from collections.abc import Sequence

from pullweights.descriptor import UNBOUNDED, Dim, DimLike, TensorDescriptor
from pullweights.errors import GraphError
from pullweights.graph.core import BuilderCore
from pullweights.graph.operand import Operand
from pullweights.graph.shapes import broadcast_shapes, normalize_axis, static_size

__all__ = ["ShapeOps"]


def _sum_dims(dims: Sequence[DimLike]) -> DimLike:
    """The size of dims laid end to end; symbolic parts make a new bounded Dim."""
    static = sum(d for d in dims if isinstance(d, int))
    symbolic = [d for d in dims if isinstance(d, Dim)]
    if not symbolic:
        return static
    if len(symbolic) == 1 and static == 0:
        return symbolic[0]
    lo = static + sum(d.min_size for d in symbolic)
    hi = min(UNBOUNDED, static + sum(d.max_size for d in symbolic))
    name = "_plus_".join([d.name for d in symbolic] + ([str(static)] if static else []))
    return Dim(name, lo, hi)


class ShapeOps(BuilderCore):
    """Ops that move or select elements without arithmetic."""

    def reshape(self, x: Operand, new_shape: Sequence[DimLike]) -> Operand:
        """Same elements, new shape; dims may be symbolic (no ``-1``: name every dim)."""
        self._check_operands("reshape", x)
        try:
            desc = TensorDescriptor(x.dtype, new_shape)
        except ValueError as exc:
            raise GraphError(f"reshape: {exc}") from None
        old, new = static_size(x.shape), static_size(desc.shape)
        if old is not None and new is not None and old != new:
            raise GraphError(
                f"reshape: cannot reshape {x.origin} {list(x.shape)} ({old} elements) "
                f"to {list(desc.shape)} ({new} elements)"
            )
        if (old is None) != (new is None) or {d for d in x.shape if isinstance(d, Dim)} != {
            d for d in desc.shape if isinstance(d, Dim)
        }:
            raise GraphError(
                f"reshape: symbolic dims of {list(x.shape)} and {list(desc.shape)} must match"
            )
        shape = self._shape_tensor(desc.shape)
        return self._emit1("Reshape", [x, shape], desc, label="reshape")

    def transpose(self, x: Operand, permutation: Sequence[int] | None = None) -> Operand:
        """Permute axes (default: reverse them)."""
        self._check_operands("transpose", x)
        perm = list(range(x.rank))[::-1] if permutation is None else list(permutation)
        if sorted(perm) != list(range(x.rank)):
            raise GraphError(f"transpose: {perm} is not a permutation of rank {x.rank}")
        shape = [x.shape[p] for p in perm]
        return self._emit1(
            "Transpose", [x], TensorDescriptor(x.dtype, shape), label="transpose", perm=perm
        )

    def concat(self, inputs: Sequence[Operand], axis: int) -> Operand:
        """Join operands along ``axis``; other dims must match."""
        if not inputs:
            raise GraphError("concat: needs at least one input")
        self._check_operands("concat", *inputs)
        dtype = self._same_dtype("concat", *inputs)
        rank = inputs[0].rank
        if any(x.rank != rank for x in inputs):
            raise GraphError(f"concat: ranks differ: {[list(x.shape) for x in inputs]}")
        axis = normalize_axis("concat", axis, rank)
        for i in range(rank):
            if i != axis and len({x.shape[i] for x in inputs}) != 1:
                raise GraphError(
                    f"concat: dim {i} differs between {[list(x.shape) for x in inputs]}"
                )
        shape = list(inputs[0].shape)
        shape[axis] = _sum_dims([x.shape[axis] for x in inputs])
        return self._emit1(
            "Concat", list(inputs), TensorDescriptor(dtype, shape), label="concat", axis=axis
        )

    def split(self, x: Operand, splits: int | Sequence[int], axis: int = 0) -> list[Operand]:
        """Split along ``axis`` into ``splits`` equal parts, or parts of the given sizes."""
        self._check_operands("split", x)
        axis = normalize_axis("split", axis, x.rank)
        size = x.shape[axis]
        if not isinstance(size, int):
            raise GraphError(f"split: axis {axis} of {list(x.shape)} must be static")
        if isinstance(splits, int):
            if splits <= 0 or size % splits:
                raise GraphError(f"split: {size} cannot be split into {splits} equal parts")
            sizes = [size // splits] * splits
        else:
            sizes = [int(s) for s in splits]
            if any(s < 0 for s in sizes) or sum(sizes) != size:
                raise GraphError(f"split: sizes {sizes} must be >= 0 and add up to {size}")
        outs = []
        for s in sizes:
            shape = list(x.shape)
            shape[axis] = s
            outs.append(TensorDescriptor(x.dtype, shape))
        return self._emit("Split", [x, self._int64s(sizes)], outs, label="split", axis=axis)

    def slice(
        self,
        x: Operand,
        starts: Sequence[int],
        sizes: Sequence[int],
        strides: Sequence[int] | None = None,
    ) -> Operand:
        """Take ``sizes[i]`` elements from ``starts[i]`` on every axis (WebNN ``slice``)."""
        self._check_operands("slice", x)
        strides = [1] * x.rank if strides is None else list(strides)
        if not len(starts) == len(sizes) == len(strides) == x.rank:
            raise GraphError(f"slice: starts, sizes and strides need {x.rank} entries each")
        shape: list[DimLike] = []
        ends: list[int] = []
        for axis, (start, size, stride, dim) in enumerate(
            zip(starts, sizes, strides, x.shape, strict=True)
        ):
            if start < 0 or size < 0 or stride < 1:
                raise GraphError(f"slice: axis {axis}: need start >= 0, size >= 0, stride >= 1")
            bound = dim if isinstance(dim, int) else dim.min_size
            if start + size > bound and (isinstance(dim, int) or size != 0):
                raise GraphError(
                    f"slice: axis {axis}: [{start}, {start + size}) exceeds dim {dim!r}"
                )
            shape.append(-(-size // stride))
            ends.append(start + size)
        if all(
            isinstance(d, int) and s == 0 and z == d
            for s, z, d in zip(starts, sizes, x.shape, strict=True)
        ) and all(st == 1 for st in strides):
            return x
        return self._emit1(
            "Slice",
            [
                x,
                self._int64s(starts),
                self._int64s(ends),
                self._int64s(range(x.rank)),
                self._int64s(strides),
            ],
            TensorDescriptor(x.dtype, shape),
            label="slice",
        )

    def gather(self, x: Operand, indices: Operand, axis: int = 0) -> Operand:
        """Select slices of ``x`` along ``axis`` by integer ``indices`` (any shape)."""
        self._check_operands("gather", x, indices)
        self._check_dtype("gather", indices, ("int64", "int32", "uint32"), "indices")
        axis = normalize_axis("gather", axis, x.rank)
        shape = (*x.shape[:axis], *indices.shape, *x.shape[axis + 1 :])
        idx = indices if indices.dtype != "uint32" else self.cast(indices, "int64")  # type: ignore[attr-defined]
        return self._emit1(
            "Gather", [x, idx], TensorDescriptor(x.dtype, shape), label="gather", axis=axis
        )

    def expand(self, x: Operand, new_shape: Sequence[DimLike]) -> Operand:
        """Broadcast ``x`` to ``new_shape``."""
        self._check_operands("expand", x)
        try:
            desc = TensorDescriptor(x.dtype, new_shape)
        except ValueError as exc:
            raise GraphError(f"expand: {exc}") from None
        out = broadcast_shapes("expand", x.shape, desc.shape)
        if tuple(out) != tuple(desc.shape):
            raise GraphError(f"expand: {list(x.shape)} cannot expand to {list(desc.shape)}")
        return self._emit1("Expand", [x, self._shape_tensor(desc.shape)], desc, label="expand")
