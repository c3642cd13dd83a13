"""Running graphs: the context, the compile pipeline, compiled graphs, saved sessions,
tensors, and the weight puller.

::

    context.py   Context / create_context: compute policy -> onnxruntime settings, cache
    pipeline.py  compile_graph: pull each stage's weights, compile it, chain the stages
    puller.py    WeightPuller: payloads to their final place, once, under a byte budget
    saved.py     saved sessions: prepacked weights written once, memory-mapped later
    graph.py     Graph: compute / dispatch over the chained stage sessions
    tensor.py    Tensor: an onnxruntime value that lives across calls (a KV cache)
    threads.py   worker threads that a cancelled load waits for

This package sits above everything else: it imports the builder's lowered graphs, the
weight references, the cache and the sources; nothing below imports it.
"""

from pullweights.runtime.context import ComputePolicy, Context, create_context
from pullweights.runtime.graph import Graph
from pullweights.runtime.puller import WeightPuller
from pullweights.runtime.tensor import Tensor

__all__ = ["ComputePolicy", "Context", "Graph", "Tensor", "WeightPuller", "create_context"]
