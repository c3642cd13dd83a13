"""Lowering a builder's graph to ONNX stages, without reading any weight.

Weights and large constants an op needs as graph constants (``MatMulNBits`` B/scales/zero
points) become initializers whose external data points at an empty placeholder file
(onnxruntime rejects large initializers with no data at all); onnxruntime gets their bytes
through ``SessionOptions.add_initializer`` (zero-copy OrtValues) and never opens the
placeholder. Every other weight becomes a graph input bound at run time, which onnxruntime
never copies or prepacks. Building never reads a weight byte.

``MatMulNBits`` nodes with a very large ``B`` are split into row pieces
(:mod:`~pullweights.graph.split_matmul`); a weight left with no constant use is bound as a
graph input where other nodes read it, and otherwise only loaded to make the pieces.

The node list is then cut into stages (:mod:`~pullweights.graph.stages`), each a complete
ONNX model of its own: values produced by one stage and used by a later one ("links")
are outputs of the first and inputs of the second.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
from pullweights.graph.stages import StagePlan, partition
from pullweights.weights import WeightRef

__all__ = [
    "IR_VERSION",
    "OPSETS",
    "PLACEHOLDER",
    "InitializerSource",
    "LoweredGraph",
    "LoweredStage",
    "StagePlan",
    "lower",
]

#: onnxruntime 1.31 accepts IR version <= 10 (newer onnx defaults to 11+).
IR_VERSION = 10
OPSETS = {"": 21, "com.microsoft": 1}
#: Empty file, next to the saved model, named by every declared initializer.
PLACEHOLDER = "pullweights-placeholder.bin"


@dataclass
class LoweredStage:
    """One stage: an ONNX model plus everything it needs that is not inside the protobuf."""

    name: str
    model: onnx.ModelProto
    #: Inputs fed on every run: the graph's own inputs this stage reads, and links.
    inputs: dict[str, TensorDescriptor]
    #: Outputs: the graph's outputs made here, and links later stages read.
    outputs: dict[str, TensorDescriptor]
    #: Which of :attr:`inputs` come from earlier stages.
    links_in: list[str]
    #: Weights fed as graph inputs on every run (zero-copy, never prepacked).
    bound_weights: dict[str, WeightRef]
    #: Weights the declared initializers are made of, loaded before the session exists.
    initializer_weights: dict[str, WeightRef]
    #: Constants too large for the protobuf that declared initializers are made of.
    large_constants: dict[str, np.ndarray]
    #: Other constants too large for the protobuf: graph inputs bound on every run, so
    #: onnxruntime never constant-folds (and so never reads) a placeholder.
    bound_constants: dict[str, np.ndarray]
    #: Every initializer declared with placeholder data (given to onnxruntime through
    #: ``add_initializer``) -> the loaded weight or large constant it views.
    initializers: dict[str, InitializerSource]
    #: Node name -> the builder call that made it, for error messages.
    origins: dict[str, str]

    @property
    def prepacked_bytes(self) -> int:
        """Bytes of the declared initializers (what onnxruntime prepacks)."""
        return sum(src.nbytes for src in self.initializers.values())

    @property
    def largest_prepacked(self) -> int:
        """Bytes of the largest declared initializer (what re-opening a saved session
        packs at once, to find its saved copy)."""
        return max((src.nbytes for src in self.initializers.values()), default=0)

    def initializer_arrays(self, loaded: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every declared initializer as a zero-copy view of ``loaded`` (the arrays of
        :attr:`initializer_weights` and :attr:`large_constants`, by name)."""
        return {name: src.view(loaded[src.base]) for name, src in self.initializers.items()}


@dataclass
class LoweredGraph:
    """A lowered graph: its stages, in the order they run."""

    inputs: dict[str, TensorDescriptor]
    outputs: dict[str, TensorDescriptor]
    stages: list[LoweredStage]
    #: Node name -> the builder call that made it, for error messages.
    origins: dict[str, str]

    @property
    def weights(self) -> dict[str, WeightRef]:
        """Every weight of every stage, by name."""
        found: dict[str, WeightRef] = {}
        for stage in self.stages:
            found.update(stage.initializer_weights)
            found.update(stage.bound_weights)
        return found


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


@dataclass
class _Whole:
    """The graph before it is cut: nodes and what each kind of name stands for."""

    nodes: list[onnx.NodeProto]
    inputs: dict[str, TensorDescriptor]
    outputs: dict[str, TensorDescriptor]
    bound: dict[str, WeightRef]
    declared: dict[str, WeightRef]
    large: dict[str, np.ndarray]
    bound_constants: dict[str, np.ndarray]
    embedded: dict[str, TensorProto]
    sources: dict[str, InitializerSource]
    values: dict[str, TensorDescriptor]
    origins: dict[str, str]


def lower(
    builder: BuilderCore, outputs: Mapping[str, Operand], *, stages: StagePlan = "auto"
) -> LoweredGraph:
    """Lower the part of ``builder``'s graph that ``outputs`` depend on, cut into stages.

    Raises:
        GraphError: no outputs, a name clash, an operand from another builder, a bad
            ``stages`` value, or a builder that has already built its graph.
    """
    builder._check_open("build")
    whole, units = _whole(builder, outputs)
    costs: list[int] = []
    counted: set[str] = set()
    for node in whole.nodes:
        cost = 0
        for name in node.input:
            if name in whole.sources and name not in counted:
                counted.add(name)
                cost += whole.sources[name].nbytes
        costs.append(cost)
    names = dict(enumerate(builder.stage_names))
    spans = partition(units, costs, names, stages)
    made: dict[str, int] = {}
    for index, span in enumerate(spans):
        for node in whole.nodes[span.start : span.stop]:
            for out in node.output:
                made[out] = index
    wanted_later: dict[str, int] = {}  # value -> last stage that reads it
    for index, span in enumerate(spans):
        for node in whole.nodes[span.start : span.stop]:
            for name in node.input:
                if name in made and made[name] < index:
                    wanted_later[name] = max(wanted_later.get(name, -1), index)
    lowered = [
        _stage(whole, span.name, whole.nodes[span.start : span.stop], index, made, wanted_later)
        for index, span in enumerate(spans)
    ]
    builder._built = True
    return LoweredGraph(whole.inputs, whole.outputs, lowered, whole.origins)


def _whole(builder: BuilderCore, outputs: Mapping[str, Operand]) -> tuple[_Whole, list[int]]:
    """The needed nodes (split, with output identities) and the stage mark of each."""
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
    stage_of = dict(builder.node_stage)
    # Each output's Identity goes right after the node that makes it, in that node's
    # stage: a stage must write its outputs itself (a KV cache bound as an output is
    # updated in place only if the node writing it is in the same session).
    identities: dict[str, list[onnx.NodeProto]] = {}
    leading: list[onnx.NodeProto] = []
    for name, op in outputs.items():
        node_name = f"output:{name}"
        identity = helper.make_node("Identity", [op.name], [name], name=node_name)
        producer = producers.get(op.name)
        if producer is None:  # an input or constant passed straight through
            leading.append(identity)
            stage_of[node_name] = 0
        else:
            identities.setdefault(producer.name, []).append(identity)
            stage_of[node_name] = stage_of.get(producer.name, 0)
    nodes = list(leading)
    for node in builder.nodes:
        if any(o in needed for o in node.output):
            nodes.append(_trim_optional(node))
            nodes.extend(identities.get(node.name, []))

    inputs = {n: d for n, d in builder.inputs.items() if n in needed}
    bound: dict[str, WeightRef] = {}
    declared: dict[str, WeightRef] = {}
    for name, ref in builder.weights.items():
        if name not in needed:
            continue
        (declared if name in builder.constant_required else bound)[name] = ref
    embedded: dict[str, TensorProto] = {}
    large: dict[str, np.ndarray] = {}
    bound_constants: dict[str, np.ndarray] = {}
    for name, arr in builder.constants.items():
        if name not in needed:
            continue
        if arr.nbytes <= builder.EMBED_LIMIT:
            embedded[name] = numpy_helper.from_array(arr, name)
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
    parents: dict[str, str] = {}
    nodes, pieces = split_large_matmuls(nodes, descriptors, origins, parents=parents)
    for new, old in parents.items():
        stage_of[new] = stage_of.get(old, 0)
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
    values = dict(builder.values)
    values.update({name: op.descriptor for name, op in outputs.items()})
    for node in nodes:  # a split piece's output: the whole output's rows of this piece
        if node.name in parents and node.op_type == "MatMulNBits":
            whole_out = values[node.output[0].rsplit("/rows", 1)[0]]
            rows = next(helper.get_attribute_value(a) for a in node.attribute if a.name == "N")
            values[node.output[0]] = TensorDescriptor(
                whole_out.dtype, (*whole_out.shape[:-1], int(rows))
            )
    whole = _Whole(
        nodes=nodes,
        inputs=inputs,
        outputs={name: op.descriptor for name, op in outputs.items()},
        bound=bound,
        declared=declared,
        large=large,
        bound_constants=bound_constants,
        embedded=embedded,
        sources=sources,
        values=values,
        origins=origins,
    )
    return whole, [stage_of.get(node.name, 0) for node in nodes]


def _stage(
    whole: _Whole,
    name: str,
    nodes: list[onnx.NodeProto],
    index: int,
    made: Mapping[str, int],
    wanted_later: Mapping[str, int],
) -> LoweredStage:
    """One stage's model: its nodes, the inputs, weights and constants they read."""
    reads = _ordered(n for node in nodes for n in node.input if n)
    produced = {out for node in nodes for out in node.output}
    links_in = [n for n in reads if made.get(n, index) < index]
    inputs = {n: whole.inputs[n] for n in reads if n in whole.inputs}
    inputs.update({n: whole.values[n] for n in links_in})
    outputs = {n: d for n, d in whole.outputs.items() if n in produced}
    for value in _ordered(out for node in nodes for out in node.output):
        if wanted_later.get(value, -1) > index and value not in outputs:
            outputs[value] = whole.values[value]
    bound = {n: whole.bound[n] for n in reads if n in whole.bound}
    bound_constants = {n: whole.bound_constants[n] for n in reads if n in whole.bound_constants}
    initializers = {n: whole.sources[n] for n in reads if n in whole.sources}
    bases = {src.base for src in initializers.values()}
    initializer_weights = {n: whole.declared[n] for n in sorted(bases) if n in whole.declared}
    large = {n: whole.large[n] for n in sorted(bases) if n in whole.large}
    tensors = [whole.embedded[n] for n in reads if n in whole.embedded]
    tensors += [_declared_initializer(n, src.descriptor) for n, src in initializers.items()]

    graph_inputs = [_value_info(n, d) for n, d in inputs.items()]
    graph_inputs += [_value_info(n, ref.descriptor) for n, ref in bound.items()]
    graph_inputs += [
        _value_info(n, TensorDescriptor(str(a.dtype), a.shape)) for n, a in bound_constants.items()
    ]
    graph = helper.make_graph(
        nodes,
        "pullweights" if not name else f"pullweights: {name}",
        graph_inputs,
        [_value_info(n, d) for n, d in outputs.items()],
        initializer=tensors,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(domain, v) for domain, v in OPSETS.items()],
        ir_version=IR_VERSION,
        producer_name="pullweights",
    )
    origins = {node.name: whole.origins[node.name] for node in nodes if node.name in whole.origins}
    return LoweredStage(
        name=name,
        model=model,
        inputs=inputs,
        outputs=outputs,
        links_in=links_in,
        bound_weights=bound,
        initializer_weights=initializer_weights,
        large_constants=large,
        bound_constants=bound_constants,
        initializers=initializers,
        origins=origins,
    )


def _ordered(names: Iterable[str]) -> list[str]:
    """``names`` without repeats, in first-seen order."""
    return list(dict.fromkeys(names))
