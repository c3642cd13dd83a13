"""The graph builder: declare inputs, weights and constants, chain ops, build a graph.

Follows the WebNN ``MLGraphBuilder`` shape: ``input()``, ``constant()``, ops, ``build()``.
A weight is an ``input()`` that carries a :class:`~pullweights.weights.WeightRef` instead of
bytes; ``build()`` lowers to ONNX without reading any weight and hands the result to the
builder's context (:class:`~pullweights.runtime.context.Context`), which pulls the weights
and compiles it, stage by stage, off the event loop.

The builder knows nothing of where bytes come from or how graphs run: it talks to its
context through the :class:`Compiler` protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol

from typing_extensions import TypeVar

from pullweights.errors import GraphError
from pullweights.events import ProgressCallback
from pullweights.graph.lowering import LoweredGraph, StagePlan, lower
from pullweights.graph.operand import Operand
from pullweights.graph.ops_elementwise import ElementwiseOps
from pullweights.graph.ops_linalg import LinalgOps
from pullweights.graph.ops_nn import NNOps
from pullweights.graph.ops_reduce import ReduceOps
from pullweights.graph.ops_shape import ShapeOps
from pullweights.graph.ops_transformer import TransformerOps

__all__ = ["Compiler", "GraphBuilder"]

#: What the context's ``compile`` returns (a ``pullweights.Graph``).
G = TypeVar("G", covariant=True, default=Any)


class Compiler(Protocol[G]):
    """What a builder's context does with a lowered graph (the runtime implements it)."""

    async def compile(
        self,
        lowered: LoweredGraph,
        *,
        progress: ProgressCallback | None = None,
        on_compile_start: Callable[[], object] | None = None,
        prefetch: object | None = None,
    ) -> G:
        """Pull ``lowered``'s weights and compile it; cancellable."""
        ...


class GraphBuilder(
    ElementwiseOps, LinalgOps, ShapeOps, ReduceOps, NNOps, TransformerOps, Generic[G]
):
    """Builds one graph. Ops check shapes and dtypes when called and raise
    :class:`~pullweights.errors.GraphError` naming the op and operands.

    Example::

        ctx = pullweights.create_context()
        b = pullweights.GraphBuilder(ctx)
        x = b.input("x", TensorDescriptor("float32", [Dim("seq", 1, 4096), 1024]))
        w = b.input("w", ref.descriptor, weight=ref)
        graph = await b.build({"y": b.relu(b.matmul(x, w))})
        result = await graph.compute({"x": data})
    """

    def __init__(self, context: Compiler[G]) -> None:
        """Start a graph that ``context`` compiles (``pullweights.create_context()``).

        Raises:
            GraphError: ``context`` cannot compile graphs.
        """
        if not callable(getattr(context, "compile", None)):
            raise GraphError(
                f"GraphBuilder needs a context (pullweights.create_context()), got "
                f"{type(context).__name__}"
            )
        super().__init__(context)
        self.compiler: Compiler[G] = context

    async def build(
        self,
        outputs: Mapping[str, Operand],
        *,
        stages: StagePlan = "auto",
        progress: ProgressCallback | None = None,
        on_compile_start: Callable[[], object] | None = None,
        prefetch: object | None = None,
    ) -> G:
        """Lower to ONNX, pull the weights and compile, off the event loop; cancellable.

        Args:
            outputs: the graph's outputs by name; ``compute`` returns them in this order.
            stages: how the graph is cut into stages, each its own onnxruntime session
                compiled as soon as its own weights have arrived: ``"auto"`` (cut by the
                bytes of the weights onnxruntime prepacks, preferring the boundaries
                marked with :meth:`stage`), ``"marked"`` (exactly the marked stages),
                or an ``int`` (at most that many stages; 1 = one session).
            progress: called with a :class:`~pullweights.events.Progress` per weight
                pulled.
            on_compile_start: called (on the event loop) once every stage's session is
                being created and only bound weights are still arriving: from then on
                compiling needs little Python, so GIL-heavy work started there (building
                a tokenizer) no longer delays it.
            prefetch: saved sessions the context started opening before this graph
                existed (:class:`pullweights.runtime.prefetch.SessionPrefetch`), which
                stages with those keys take instead of opening their own.

        Returns:
            The context's compiled graph (a :class:`~pullweights.runtime.graph.Graph`),
            whose ``compute`` returns the outputs under these names and in this order.

        Raises:
            GraphError: no outputs, a bad output name, or a bad ``stages`` value.
            CompileError: onnxruntime refused the graph.
        """
        lowered = lower(self, outputs, stages=stages)
        return await self.compiler.compile(
            lowered, progress=progress, on_compile_start=on_compile_start, prefetch=prefetch
        )
