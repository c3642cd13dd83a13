"""Lowering a builder's graph to an ONNX model — weights stay out of the protobuf.

Weights an op needs as constants (``MatMulNBits`` B/scales/zero points) become
initializers whose external data points at an empty placeholder file (onnxruntime rejects
large initializers with no data at all); onnxruntime gets their bytes through
``SessionOptions.add_initializer`` (zero-copy OrtValues) and never opens the placeholder.
Every other weight becomes a graph input bound at run time, which onnxruntime never copies
or prepacks. Building never reads a weight byte.

``MatMulNBits`` nodes with a very large ``B`` are split into row pieces
(:mod:`~pullweights.graph.split_matmul`); a weight left with no constant use is bound as a
graph input where other nodes read it, and otherwise only loaded to make the pieces.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pullweights.descriptor import Dim, TensorDescriptor
from pullweights.dtypes import to_onnx
from pullweights.errors import GraphError
from pullweights.graph.core import BuilderCore
from pullweights.graph.operand import Operand
from pullweights.graph.split_matmul import InitializerSource, split_large_matmuls
from pullweights.weights import WeightRef

__all__ = ["IR_VERSION", "OPSETS", "PLACEHOLDER", "InitializerSource", "LoweredGraph", "lower"]

#: onnxruntime 1.31 accepts IR version <= 10 (newer onnx defaults to 11+).
IR_VERSION = 10
OPSETS = {"": 21, "com.microsoft": 1}
#: Empty file, next to the saved model, named by every declared initializer.
PLACEHOLDER = "pullweights-placeholder.bin"


@dataclass
class LoweredGraph:
    """An ONNX model plus everything it needs that is not inside the protobuf."""

    model: onnx.ModelProto
    inputs: dict[str, TensorDescriptor]
    outputs: dict[str, TensorDescriptor]
    #: Weights fed as graph inputs on every run (zero-copy, never prepacked).
    bound_weights: dict[str, WeightRef]
    #: Weights the declared initializers are made of, loaded before the session exists.
    initializer_weights: dict[str, WeightRef]
    #: Constants too large for the protobuf that declared initializers are made of.
    large_constants: dict[str, np.ndarray]
    #: Other constants too large for the protobuf: graph inputs bound on every run, so
    #: onnxruntime never constant-folds (and so never reads) a placeholder.
    bound_constants: dict[str, np.ndarray]
    #: Node name -> the builder call that made it, for error messages.
    origins: dict[str, str]
    #: Every initializer declared with placeholder data (given to onnxruntime through
    #: ``add_initializer``) -> the loaded weight or large constant it views.
    initializers: dict[str, InitializerSource]

    def initializer_arrays(self, loaded: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every declared initializer as a zero-copy view of ``loaded`` (the arrays of
        :attr:`initializer_weights` and :attr:`large_constants`, by name)."""
        return {name: src.view(loaded[src.base]) for name, src in self.initializers.items()}


def _value_info(name: str, desc: TensorDescriptor) -> onnx.ValueInfoProto:
    dims = [d.name if isinstance(d, Dim) else d for d in desc.shape]
    return helper.make_tensor_value_info(name, to_onnx(desc.dtype), dims)


def _declared_initializer(name: str, desc: TensorDescriptor) -> TensorProto:
    tensor = TensorProto()
    tensor.name = name
    tensor.data_type = to_onnx(desc.dtype)
    tensor.dims.extend(desc.static_shape)
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", PLACEHOLDER), ("offset", "0"), ("length", str(desc.nbytes))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _trim_optional(node: onnx.NodeProto) -> onnx.NodeProto:
    """``node`` without trailing omitted ("") inputs, which mean the same in ONNX.

    onnxruntime 1.31 crashes (segfault) in an extended-level fusion on a
    ``LayerNormalization`` whose omitted bias is spelled as a trailing "" input.
    """
    keep = len(node.input)
    while keep and not node.input[keep - 1]:
        keep -= 1
    if keep == len(node.input):
        return node
    trimmed = onnx.NodeProto()
    trimmed.CopyFrom(node)
    del trimmed.input[keep:]
    return trimmed


def lower(builder: BuilderCore, outputs: Mapping[str, Operand]) -> LoweredGraph:
    """Lower the part of ``builder``'s graph that ``outputs`` depend on.

    Raises:
        GraphError: no outputs, a name clash, an operand from another builder, or a
            builder that has already built its graph.
    """
    builder._check_open("build")
    if not outputs:
        raise GraphError("build: needs at least one output")
    for name, operand in outputs.items():
        if not isinstance(operand, Operand) or operand.builder is not builder:
            raise GraphError(f"build: output {name!r} is not an operand of this builder")
        if name in builder.inputs or name in builder.weights or ":" in name or not name:
            raise GraphError(f"build: output name {name!r} clashes with an input or is invalid")

    producers = {out: node for node in builder.nodes for out in node.output}
    needed: set[str] = set()
    stack = [op.name for op in outputs.values()]
    while stack:
        value = stack.pop()
        if value in needed or not value:
            continue
        needed.add(value)
        node = producers.get(value)
        if node is not None:
            stack.extend(node.input)
    nodes = [_trim_optional(n) for n in builder.nodes if any(o in needed for o in n.output)]
    nodes += [
        helper.make_node("Identity", [op.name], [name], name=f"output:{name}")
        for name, op in outputs.items()
    ]

    inputs = {n: d for n, d in builder.inputs.items() if n in needed}
    bound: dict[str, WeightRef] = {}
    declared: dict[str, WeightRef] = {}
    for name, ref in builder.weights.items():
        if name not in needed:
            continue
        (declared if name in builder.constant_required else bound)[name] = ref
    initializers: list[TensorProto] = []
    large: dict[str, np.ndarray] = {}
    bound_constants: dict[str, np.ndarray] = {}
    for name, arr in builder.constants.items():
        if name not in needed:
            continue
        if arr.nbytes <= builder.EMBED_LIMIT:
            initializers.append(numpy_helper.from_array(arr, name))
        elif name not in builder.constant_required:
            bound_constants[name] = arr
        else:
            large[name] = arr
    for name, ref in declared.items():
        if not ref.descriptor.is_static:
            raise GraphError(f"weight {name!r} must have a static shape")

    origins = dict(builder.origins)
    descriptors = {n: ref.descriptor for n, ref in declared.items()}
    descriptors.update({n: TensorDescriptor(str(a.dtype), a.shape) for n, a in large.items()})
    nodes, pieces = split_large_matmuls(nodes, descriptors, origins)
    sources = dict(pieces)
    split = {src.base for src in pieces.values()}
    still_constant = {
        name
        for node in nodes
        if node.op_type == "MatMulNBits" and node.domain == "com.microsoft"
        for name in node.input[1:]
    }
    read = {name for node in nodes for name in node.input}
    for name, desc in descriptors.items():
        if name not in split or name in still_constant:
            sources[name] = InitializerSource(name, 0, desc)
        elif name in read:  # other nodes read the whole array: feed it as an input
            if name in declared:
                bound[name] = declared[name]
            else:
                bound_constants[name] = large[name]
    initializers += [_declared_initializer(n, src.descriptor) for n, src in sources.items()]

    graph_inputs = [_value_info(n, d) for n, d in inputs.items()]
    graph_inputs += [_value_info(n, ref.descriptor) for n, ref in bound.items()]
    graph_inputs += [
        _value_info(n, TensorDescriptor(str(a.dtype), a.shape)) for n, a in bound_constants.items()
    ]
    out_desc = {name: op.descriptor for name, op in outputs.items()}
    graph = helper.make_graph(
        nodes,
        "pullweights",
        graph_inputs,
        [_value_info(n, d) for n, d in out_desc.items()],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(domain, v) for domain, v in OPSETS.items()],
        ir_version=IR_VERSION,
        producer_name="pullweights",
    )
    builder._built = True
    return LoweredGraph(
        model, inputs, out_desc, bound, declared, large, bound_constants, origins, sources
    )
