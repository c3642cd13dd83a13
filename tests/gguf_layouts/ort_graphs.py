"""Raw ONNX graphs that consume the layouts, fed the way pullweights feeds onnxruntime.

Weights are initializers declared in the model with dims only (external data pointing at an
empty file in a folder given by ``session.model_external_initializers_file_folder_path``) and
supplied with ``SessionOptions.add_initializer``: constant, so prepacking applies, and
zero-copy. The ``OrtValue`` objects are kept alive as long as the session.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from pullweights.gguf.layouts.gather import gather_spec
from pullweights.gguf.layouts.matmul_nbits import MatMulNBitsTransform

_ONNX_TYPES = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.float32): TensorProto.FLOAT}
_EMPTY_DIR: list[str] = []
_UNUSED = "pullweights-unused.bin"


def _empty_dir() -> str:
    if not _EMPTY_DIR:
        d = tempfile.mkdtemp(prefix="pw-layouts-")
        Path(d, _UNUSED).touch()
        _EMPTY_DIR.append(d)
    return _EMPTY_DIR[0]


def _declare(name: str, array: np.ndarray) -> TensorProto:
    t = TensorProto()
    t.name = name
    t.data_type = _ONNX_TYPES[array.dtype]
    t.dims.extend(array.shape)
    t.data_location = TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", _UNUSED
    return t


def _const(name: str, values: list[int]) -> TensorProto:
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)


@dataclass
class Model:
    """A session plus the arrays and ``OrtValue`` objects it reads from (kept alive)."""

    session: ort.InferenceSession
    keep: list[Any] = field(default_factory=list)

    def __call__(self, **feeds: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.session.run(None, feeds)[0]
        return out


def build(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    output: onnx.ValueInfoProto,
    weights: Mapping[str, np.ndarray],
    consts: list[TensorProto] = (),  # type: ignore[assignment]
    threads: int = 1,
) -> Model:
    """A session over ``nodes``, with ``weights`` fed through ``add_initializer``."""
    graph = helper.make_graph(nodes, "g", inputs, [output], initializer=list(consts))
    graph.initializer.extend(_declare(name, a) for name, a in weights.items())
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)],
        ir_version=10,
    )
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.add_session_config_entry(
        "session.model_external_initializers_file_folder_path", _empty_dir()
    )
    keep: list[Any] = []
    for name, a in weights.items():
        value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a))
        so.add_initializer(name, value)
        keep += [a, value]
    session = ort.InferenceSession(
        model.SerializeToString(), so, providers=["CPUExecutionProvider"]
    )
    return Model(session, keep)


def matmul_model(
    t: MatMulNBitsTransform,
    parts: Mapping[str, np.ndarray],
    accuracy_level: int | None = None,
    threads: int = 1,
) -> Model:
    """``Y[M, N] = X[M, K] @ W^T`` with W the layout's weights (plus the mins split)."""
    level = t.accuracy_level if accuracy_level is None else accuracy_level
    nodes = [
        helper.make_node(
            "MatMulNBits",
            ["X", "B", "scales", "zero_points"],
            ["Y" if not t.has_mins else "Yq"],
            domain="com.microsoft",
            K=t.k,
            N=t.n,
            bits=t.bits,
            block_size=t.block_size,
            accuracy_level=level,
        )
    ]
    weights = {k: parts[k] for k in ("B", "scales", "zero_points")}
    consts = []
    if t.has_mins:
        consts.append(_const("blocks_shape", [0, t.n_blocks, t.block_size]))
        consts.append(_const("last_axis", [-1]))
        nodes += [
            helper.make_node("Reshape", ["X", "blocks_shape"], ["Xb"]),
            helper.make_node("ReduceSum", ["Xb", "last_axis"], ["Xs"], keepdims=0),
            helper.make_node("Gemm", ["Xs", "mins", "Yq"], ["Y"], alpha=-1.0, beta=1.0, transB=1),
        ]
        weights["mins"] = parts["mins"]
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["M", t.k])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", t.n])
    return build(nodes, [x], y, weights, consts, threads)


def gather_model(t: MatMulNBitsTransform, parts: Mapping[str, np.ndarray]) -> Model:
    """``Y[I, K] = W[ids]`` through ``GatherBlockQuantized`` (plus a gathered mins term)."""
    spec = gather_spec(t)
    nodes = [
        helper.make_node(
            "GatherBlockQuantized",
            ["data", "ids", "scales", "zero_points"],
            ["Y" if not t.has_mins else "Yq"],
            domain="com.microsoft",
            **dict[str, Any](spec.attributes),
        )
    ]
    weights = {
        "data": parts["B"].reshape(spec.data_shape),
        "scales": parts["scales"],
        "zero_points": parts["zero_points"],
    }
    consts = []
    if t.has_mins:
        consts.append(_const("blocks_shape", [0, t.n_blocks, t.block_size]))
        consts.append(_const("flat_shape", [0, t.k]))
        consts.append(_const("last_axis", [-1]))
        nodes += [
            helper.make_node("Gather", ["mins", "ids"], ["m"], axis=0),
            helper.make_node("Unsqueeze", ["m", "last_axis"], ["m3"]),
            helper.make_node("Reshape", ["Yq", "blocks_shape"], ["Yb"]),
            helper.make_node("Sub", ["Yb", "m3"], ["Ys"]),
            helper.make_node("Reshape", ["Ys", "flat_shape"], ["Y"]),
        ]
        weights["mins"] = parts["mins"]
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["I"])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["I", t.k])
    return build(nodes, [ids], y, weights, consts)
