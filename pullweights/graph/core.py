"""The builder's core: naming, node emission, symbolic dimension values, declarations.

Op families (``ops_*.py``) subclass :class:`BuilderCore`; :class:`GraphBuilder` combines them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from onnx import NodeProto, helper

from pullweights.descriptor import Dim, DimLike, TensorDescriptor
from pullweights.dtypes import DataType, cast_exact, check_dtype, from_numpy
from pullweights.errors import GraphError
from pullweights.graph.operand import Operand
from pullweights.weights import WeightRef

__all__ = ["BuilderCore"]

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _caller() -> str:
    """``file:line`` of the first frame outside pullweights, for error messages."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return "?"
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


class BuilderCore:
    """State of one graph under construction and the primitives ops are made of."""

    #: Constants up to this size are embedded in the ONNX protobuf; larger ones are passed
    #: to onnxruntime as zero-copy initializers.
    EMBED_LIMIT = 4096

    def __init__(self, context: object = None) -> None:
        #: Where the graph compiles (a :class:`~pullweights.runtime.context.Context`).
        self.context = context
        self.nodes: list[NodeProto] = []
        #: Descriptor of every value an op produced, by name (stage boundaries need them).
        self.values: dict[str, TensorDescriptor] = {}
        #: Stage mark of every node (index into :attr:`stage_names`; 0 = before any mark).
        self.node_stage: dict[str, int] = {}
        self.stage_names: list[str] = [""]
        self._stage = 0
        self.inputs: dict[str, TensorDescriptor] = {}
        self.weights: dict[str, WeightRef] = {}
        self.constants: dict[str, np.ndarray] = {}
        #: Weights and constants an op needs as graph constants (e.g. MatMulNBits B).
        self.constant_required: set[str] = set()
        self.origins: dict[str, str] = {}
        self._dim_sources: dict[Dim, tuple[str, int]] = {}
        self._dim_values: dict[Dim, str] = {}
        self._names: set[str] = set()
        self._counter = itertools.count()
        self._built = False

    # ------------------------------------------------------------------ declarations
    def input(
        self, name: str, descriptor: TensorDescriptor, *, weight: WeightRef | None = None
    ) -> Operand:
        """Declare a graph input, or — with ``weight`` — a weight pulled from its reference.

        Raises:
            GraphError: the name is taken, or ``weight`` does not match ``descriptor``.
        """
        self._check_open("input")
        if not isinstance(name, str):
            raise GraphError(f"input: name {name!r} must be a string")
        if not name or name in self._names:
            raise GraphError(f"input: name {name!r} is empty or already used")
        if not isinstance(descriptor, TensorDescriptor):
            raise GraphError(f"input {name!r}: descriptor must be a TensorDescriptor")
        if weight is not None:
            if not isinstance(weight, WeightRef):
                raise GraphError(f"input {name!r}: weight must be a WeightRef, got {weight!r}")
            if weight.descriptor.dtype != descriptor.dtype or tuple(
                weight.descriptor.shape
            ) != tuple(descriptor.shape):
                raise GraphError(
                    f"input {name!r}: descriptor {descriptor} does not match weight "
                    f"{weight.describe()} which is {weight.descriptor}"
                )
            self.weights[name] = weight
        else:
            self.inputs[name] = descriptor
        self._names.add(name)
        origin = f"input {name!r}" if weight is None else f"weight {name!r}"
        operand = Operand(self, name, descriptor, origin)
        self._register_dims(operand)
        return operand

    def constant(self, value: npt.ArrayLike, dtype: str | None = None) -> Operand:
        """A constant tensor from array data (copied once into the graph).

        With ``dtype`` the values are converted exactly (``1000.5`` into int8 is refused).

        Raises:
            GraphError: an unknown dtype, values numpy cannot make an array of, an
                unsupported element type, or values that ``dtype`` cannot hold.
        """
        self._check_open("constant")
        try:
            arr = np.asarray(value)
            if dtype is not None:
                arr = cast_exact(arr, check_dtype(dtype))
            dt = from_numpy(arr.dtype)
        except (ValueError, TypeError, OverflowError) as exc:
            raise GraphError(f"constant: {exc}") from None
        name = self._fresh("const")
        self.constants[name] = np.ascontiguousarray(arr)
        return Operand(self, name, TensorDescriptor(dt, arr.shape), f"constant{list(arr.shape)}")

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Mark the ops called inside the block as one stage of the graph.

        A stage is compiled as its own onnxruntime session as soon as its own weights
        have arrived, while later stages' bytes are still being read, and runs chained
        to its neighbours (see ``build(stages=...)``). Stages are marked in the order
        ops are called; nesting is not allowed.

        Raises:
            GraphError: a stage is already open, or ``name`` is empty or used.
        """
        self._check_open("stage")
        if self.stage_names[self._stage] != "":
            raise GraphError(f"stage {name!r}: stage {self.stage_names[self._stage]!r} is open")
        if not name or name in self.stage_names:
            raise GraphError(f"stage: name {name!r} is empty or already used")
        self.stage_names.append(name)
        self._stage = len(self.stage_names) - 1
        try:
            yield
        finally:
            # Ops after the block belong to no marked stage: a fresh unnamed unit.
            self.stage_names.append("")
            self._stage = len(self.stage_names) - 1

    # ------------------------------------------------------------------ for ops
    def _check_open(self, op: str) -> None:
        if self._built:
            raise GraphError(f"{op}: this builder has already built its graph")

    def _fresh(self, op: str) -> str:
        while True:
            name = f"{op}:{next(self._counter)}"
            if name not in self._names:
                self._names.add(name)
                return name

    def _check_operands(self, op: str, *operands: Operand | None) -> None:
        self._check_open(op)
        for i, x in enumerate(operands):
            if x is None:
                continue
            if not isinstance(x, Operand):
                raise GraphError(f"{op}: operand {i} must be an Operand, got {type(x).__name__}")
            if x.builder is not self:
                raise GraphError(f"{op}: operand {x.origin} belongs to another builder")

    def _emit(
        self,
        op_type: str,
        inputs: Sequence[Operand | str | None],
        outputs: Sequence[TensorDescriptor],
        *,
        label: str | None = None,
        domain: str = "",
        **attrs: Any,
    ) -> list[Operand]:
        """Append one ONNX node and return its outputs as operands."""
        label = label or op_type.lower()
        node_name = self._fresh(label)
        names = []
        for x in inputs:
            if x is None:
                names.append("")
            elif isinstance(x, Operand):
                names.append(x.name)
            else:
                names.append(x)
        out_names = (
            [node_name] if len(outputs) == 1 else [f"{node_name}.{i}" for i in range(len(outputs))]
        )
        self._names.update(out_names)
        attrs = {k: v for k, v in attrs.items() if v is not None}
        node = helper.make_node(
            op_type, names, out_names, name=node_name, domain=domain or None, **attrs
        )
        self.nodes.append(node)
        self.node_stage[node_name] = self._stage
        self.values.update(zip(out_names, outputs, strict=True))
        origin = f"{label} (node {node_name!r}, called at {_caller()})"
        self.origins[node_name] = origin
        result = [Operand(self, n, d, origin) for n, d in zip(out_names, outputs, strict=True)]
        for operand in result:
            self._register_dims(operand)
        return result

    def _emit1(
        self,
        op_type: str,
        inputs: Sequence[Operand | str | None],
        output: TensorDescriptor,
        **kw: Any,
    ) -> Operand:
        return self._emit(op_type, inputs, [output], **kw)[0]

    def _register_dims(self, operand: Operand) -> None:
        for axis, d in enumerate(operand.shape):
            if isinstance(d, Dim) and d not in self._dim_sources:
                self._dim_sources[d] = (operand.name, axis)

    def _int64s(self, values: Sequence[int]) -> Operand:
        """A small int64 1-D constant (axes, shapes, indices)."""
        return self.constant(np.asarray(values, dtype=np.int64))

    def _shape_tensor(self, shape: Sequence[DimLike]) -> Operand:
        """An int64 1-D tensor holding ``shape``, reading symbolic dims at run time."""
        if all(isinstance(d, int) for d in shape):
            return self._int64s([int(d) for d in shape])  # type: ignore[arg-type]
        pieces: list[Operand | str] = []
        run: list[int] = []
        for d in shape:
            if isinstance(d, Dim):
                if run:
                    pieces.append(self._int64s(run))
                    run = []
                pieces.append(self._dim_value(d))
            else:
                run.append(d)
        if run:
            pieces.append(self._int64s(run))
        if len(pieces) == 1:
            return pieces[0] if isinstance(pieces[0], Operand) else self._wrap(pieces[0], 1)
        return self._emit1(
            "Concat", pieces, TensorDescriptor("int64", [len(shape)]), label="shape", axis=0
        )

    def _wrap(self, name: str, length: int) -> Operand:
        return Operand(self, name, TensorDescriptor("int64", [length]), "shape")

    def _dim_value(self, dim: Dim) -> str:
        """Name of an int64[1] tensor holding the run-time size of ``dim``."""
        if dim in self._dim_values:
            return self._dim_values[dim]
        if dim not in self._dim_sources:
            raise GraphError(f"dimension {dim!r} is not carried by any operand of this graph")
        source, axis = self._dim_sources[dim]
        out = self._emit1(
            "Shape",
            [source],
            TensorDescriptor("int64", [1]),
            label=f"dim_{dim.name}",
            start=axis,
            end=axis + 1,
        )
        self._dim_values[dim] = out.name
        return out.name

    def _check_dtype(self, op: str, x: Operand, allowed: Sequence[DataType], what: str) -> None:
        if x.dtype not in allowed:
            raise GraphError(
                f"{op}: {what} {x.origin} has dtype {x.dtype}; expected one of {', '.join(allowed)}"
            )

    def _same_dtype(self, op: str, *xs: Operand) -> DataType:
        dtypes = {x.dtype for x in xs}
        if len(dtypes) != 1:
            listed = ", ".join(f"{x.origin}: {x.dtype}" for x in xs)
            raise GraphError(
                f"{op}: operands must share one dtype (no implicit promotion): {listed}"
            )
        return xs[0].dtype
