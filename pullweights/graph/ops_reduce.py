"""Reductions over axes, arg-max/min, and softmax."""

from __future__ import annotations

from collections.abc import Sequence

from pullweights.descriptor import DimLike, TensorDescriptor
from pullweights.dtypes import DataType
from pullweights.errors import GraphError
from pullweights.graph.core import BuilderCore
from pullweights.graph.operand import Operand
from pullweights.graph.ops_elementwise import FLOATS
from pullweights.graph.shapes import normalize_axis

__all__ = ["ReduceOps"]

# What onnxruntime's CPU kernels accept (float16 runs through inserted casts): no uint32
# anywhere, and no 8-bit types for the arithmetic reductions.
ARITHMETIC: tuple[DataType, ...] = ("float32", "float16", "int64", "int32")
ORDERED: tuple[DataType, ...] = ("float32", "float16", "int64", "int32", "int8", "uint8")


class ReduceOps(BuilderCore):
    """``reduce_*`` ops (default: over every axis), ``argmax``/``argmin`` and ``softmax``."""

    def _reduce(
        self,
        op: str,
        onnx_op: str,
        x: Operand,
        axes: Sequence[int] | None,
        keep_dims: bool,
        allowed: tuple[DataType, ...] = ARITHMETIC,
    ) -> Operand:
        self._check_operands(op, x)
        self._check_dtype(op, x, allowed, "input")
        if axes is None:
            axes_n = list(range(x.rank))
        else:
            axes_n = [normalize_axis(op, a, x.rank) for a in axes]
            if len(set(axes_n)) != len(axes_n):
                raise GraphError(f"{op}: duplicate axes {list(axes)}")
        shape: list[DimLike] = []
        for i, d in enumerate(x.shape):
            if i in axes_n:
                if keep_dims:
                    shape.append(1)
            else:
                shape.append(d)
        return self._emit1(
            onnx_op,
            [x, self._int64s(axes_n)] if axes_n else [x],
            TensorDescriptor(x.dtype, shape),
            label=op,
            keepdims=int(keep_dims),
            noop_with_empty_axes=1 if not axes_n else None,
        )

    def reduce_sum(
        self, x: Operand, axes: Sequence[int] | None = None, keep_dims: bool = False
    ) -> Operand:
        """Sum over ``axes``."""
        return self._reduce("reduce_sum", "ReduceSum", x, axes, keep_dims)

    def reduce_mean(
        self, x: Operand, axes: Sequence[int] | None = None, keep_dims: bool = False
    ) -> Operand:
        """Mean over ``axes``."""
        return self._reduce("reduce_mean", "ReduceMean", x, axes, keep_dims)

    def reduce_max(
        self, x: Operand, axes: Sequence[int] | None = None, keep_dims: bool = False
    ) -> Operand:
        """Maximum over ``axes``."""
        return self._reduce("reduce_max", "ReduceMax", x, axes, keep_dims, ORDERED)

    def reduce_min(
        self, x: Operand, axes: Sequence[int] | None = None, keep_dims: bool = False
    ) -> Operand:
        """Minimum over ``axes``."""
        return self._reduce("reduce_min", "ReduceMin", x, axes, keep_dims, ORDERED)

    def reduce_product(
        self, x: Operand, axes: Sequence[int] | None = None, keep_dims: bool = False
    ) -> Operand:
        """Product over ``axes``."""
        return self._reduce("reduce_product", "ReduceProd", x, axes, keep_dims)

    def reduce_l2(
        self, x: Operand, axes: Sequence[int] | None = None, keep_dims: bool = False
    ) -> Operand:
        """Euclidean norm over ``axes``."""
        return self._reduce("reduce_l2", "ReduceL2", x, axes, keep_dims)

    def _arg(self, op: str, onnx_op: str, x: Operand, axis: int, keep_dims: bool) -> Operand:
        self._check_operands(op, x)
        self._check_dtype(op, x, ORDERED, "input")
        axis = normalize_axis(op, axis, x.rank)
        shape = [d for i, d in enumerate(x.shape) if i != axis or keep_dims]
        if keep_dims:
            shape[axis] = 1
        return self._emit1(
            onnx_op,
            [x],
            TensorDescriptor("int64", shape),
            label=op,
            axis=axis,
            keepdims=int(keep_dims),
        )

    def argmax(self, x: Operand, axis: int = -1, keep_dims: bool = False) -> Operand:
        """Index of the largest value along ``axis`` (int64)."""
        return self._arg("argmax", "ArgMax", x, axis, keep_dims)

    def argmin(self, x: Operand, axis: int = -1, keep_dims: bool = False) -> Operand:
        """Index of the smallest value along ``axis`` (int64)."""
        return self._arg("argmin", "ArgMin", x, axis, keep_dims)

    def softmax(self, x: Operand, axis: int = -1) -> Operand:
        """``exp(x) / sum(exp(x))`` along ``axis``."""
        self._check_operands("softmax", x)
        self._check_dtype("softmax", x, FLOATS, "input")
        axis = normalize_axis("softmax", axis, x.rank)
        return self._emit1("Softmax", [x], x.descriptor, label="softmax", axis=axis)
