"""The graph builder: declare inputs, weights and constants, chain ops, build a graph.

Follows the WebNN ``MLGraphBuilder`` shape: ``input()``, ``constant()``, ops, ``build()``.
A weight is an ``input()`` that carries a :class:`~pullweights.weights.WeightRef` instead of
bytes; ``build()`` lowers to ONNX without reading any weight, then pulls the weights and
compiles the onnxruntime session off the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from pullweights.graph.operand import Operand
from pullweights.graph.ops_elementwise import ElementwiseOps
from pullweights.graph.ops_linalg import LinalgOps
from pullweights.graph.ops_nn import NNOps
from pullweights.graph.ops_reduce import ReduceOps
from pullweights.graph.ops_shape import ShapeOps
from pullweights.graph.ops_transformer import TransformerOps

if TYPE_CHECKING:
    from pullweights.graph.compiled import Graph
    from pullweights.loader import ProgressCallback

__all__ = ["GraphBuilder"]


class GraphBuilder(ElementwiseOps, LinalgOps, ShapeOps, ReduceOps, NNOps, TransformerOps):
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

    async def build(
        self, outputs: Mapping[str, Operand], *, progress: ProgressCallback | None = None
    ) -> Graph:
        """Lower to ONNX, pull the weights and compile, off the event loop; cancellable.

        Args:
            outputs: the graph's outputs by name; ``compute`` returns them in this order.
            progress: called with a :class:`~pullweights.loader.LoadEvent` per weight pulled.

        Returns:
            A :class:`~pullweights.graph.compiled.Graph` whose ``compute`` returns the
            outputs under these names and in this order.
        """
        from pullweights.context import create_context
        from pullweights.graph.compiled import compile_graph
        from pullweights.graph.lowering import lower

        lowered = lower(self, outputs)
        context = self.context or create_context()
        return await compile_graph(context, lowered, progress=progress)
