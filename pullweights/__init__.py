"""pullweights: neural-network weights pulled on demand, run on onnxruntime.

Build a graph whose weights are references (a byte range of a file, a tensor of a GGUF
file, a URL) instead of bytes; ``build()`` pulls them zero-copy while the graph compiles.
"""

from pullweights.descriptor import Dim, TensorDescriptor
from pullweights.errors import (
    CacheError,
    CompileError,
    ComputeError,
    FetchError,
    FormatError,
    GraphError,
    IntegrityError,
    PullWeightsError,
    RemoteChangedError,
    SourceError,
    UnsupportedError,
)
from pullweights.graph.builder import GraphBuilder
from pullweights.graph.operand import Operand
from pullweights.runtime import ComputePolicy, Context, Graph, Tensor, create_context
from pullweights.sources import ByteSource, ConcatSource, FileSource, HttpSettings, MemorySource
from pullweights.weights import Payload, Transform, WeightRef, raw_weight

__all__ = [
    "ByteSource",
    "CacheError",
    "CompileError",
    "ComputeError",
    "ComputePolicy",
    "ConcatSource",
    "Context",
    "Dim",
    "FetchError",
    "FileSource",
    "FormatError",
    "Graph",
    "GraphBuilder",
    "GraphError",
    "HttpSettings",
    "IntegrityError",
    "MemorySource",
    "Operand",
    "Payload",
    "PullWeightsError",
    "RemoteChangedError",
    "SourceError",
    "Tensor",
    "TensorDescriptor",
    "Transform",
    "UnsupportedError",
    "WeightRef",
    "create_context",
    "raw_weight",
]
