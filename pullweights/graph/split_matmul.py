"""Splitting very large ``MatMulNBits`` weights into row pieces, at lowering time.

onnxruntime prepacks each ``MatMulNBits`` weight into one heap buffer (about 1.25x the
size of ``B`` for 8-bit weights with ``accuracy_level=4``). A session that reloads saved
prepacked weights (see :mod:`pullweights.runtime.saved`) still packs every weight
once on the heap to find its saved copy, then frees it, so loading peaks at the largest
packed buffer; saving an optimized model copies each initializer into memory once. An
output head of a 262144-token vocabulary makes that one 200 MiB buffer.

Each output column of ``MatMulNBits`` depends only on its own row of ``B``, ``scales``
and ``zero_points`` (activations are quantized per block along ``K``), so the node can be
split along ``N`` into pieces whose outputs are concatenated, with bit-identical
results. The pieces' initializers are row ranges of the original arrays: zero-copy views,
and byte ranges of the same file when saved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from pullweights.descriptor import TensorDescriptor

__all__ = ["SPLIT_BYTES", "InitializerSource", "split_large_matmuls"]

#: ``MatMulNBits`` whose ``B`` is larger than this is split into pieces of at most this.
SPLIT_BYTES = 32 << 20
#: Rows per piece are a multiple of this (onnxruntime's kernels work in column tiles).
_ROW_MULTIPLE = 64


@dataclass(frozen=True)
class InitializerSource:
    """Where a declared initializer's bytes come from: the loaded array ``base`` (a weight
    or a large constant, by graph name) from byte ``offset``, viewed as ``descriptor``."""

    base: str
    offset: int
    descriptor: TensorDescriptor

    @property
    def nbytes(self) -> int:
        return self.descriptor.nbytes

    def view(self, base: np.ndarray) -> np.ndarray:
        """This initializer as a zero-copy view of ``base`` (C-contiguous)."""
        flat = base.reshape(-1).view(np.uint8)
        piece = flat[self.offset : self.offset + self.nbytes]
        return piece.view(self.descriptor.numpy_dtype).reshape(self.descriptor.static_shape)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _piece_shape(desc: TensorDescriptor, n: int, rows: int) -> tuple[int, ...] | None:
    """Shape of ``rows`` of ``n`` rows of ``desc``, or None if its layout is not row-major
    by output (leading dimension ``n``, or a flat array of ``n`` equal rows)."""
    shape = desc.static_shape
    if len(shape) >= 2 and shape[0] == n:
        return (rows, *shape[1:])
    if len(shape) == 1 and shape[0] % n == 0:
        return (rows * (shape[0] // n),)
    return None


def _split_one(
    node: onnx.NodeProto,
    descriptors: Mapping[str, TensorDescriptor],
    max_bytes: int,
) -> tuple[list[onnx.NodeProto], dict[str, InitializerSource]] | None:
    if node.op_type != "MatMulNBits" or node.domain != "com.microsoft" or len(node.input) > 4:
        return None
    consts = [name for name in node.input[1:] if name]
    if len(consts) < 2 or any(name not in descriptors for name in consts):
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    n = int(attrs["N"])
    b_desc = descriptors[node.input[1]]
    if b_desc.nbytes <= max_bytes or n < 2 * _ROW_MULTIPLE:
        return None
    pieces = _ceil_div(b_desc.nbytes, max_bytes)
    rows = _ceil_div(_ceil_div(n, pieces), _ROW_MULTIPLE) * _ROW_MULTIPLE
    shapes = {name: _piece_shape(descriptors[name], n, 1) for name in consts}
    if any(s is None for s in shapes.values()):
        return None
    nodes: list[onnx.NodeProto] = []
    sources: dict[str, InitializerSource] = {}
    outputs: list[str] = []
    for index, start in enumerate(range(0, n, rows)):
        stop = min(n, start + rows)
        inputs = [node.input[0]]
        for name in node.input[1:]:
            if not name:
                inputs.append(name)
                continue
            desc = descriptors[name]
            row_bytes = desc.nbytes // n
            shape = _piece_shape(desc, n, stop - start)
            assert shape is not None
            piece = f"{name}/rows{start}-{stop}"
            sources[piece] = InitializerSource(
                name, start * row_bytes, TensorDescriptor(desc.dtype, shape)
            )
            inputs.append(piece)
        out = f"{node.output[0]}/rows{start}-{stop}"
        piece_node = onnx.NodeProto()
        piece_node.CopyFrom(node)
        piece_node.name = f"{node.name}/part{index}"
        del piece_node.input[:]
        piece_node.input.extend(inputs)
        del piece_node.output[:]
        piece_node.output.append(out)
        for attr in piece_node.attribute:
            if attr.name == "N":
                attr.i = stop - start
        nodes.append(piece_node)
        outputs.append(out)
    nodes.append(
        helper.make_node("Concat", outputs, [node.output[0]], name=f"{node.name}/concat", axis=-1)
    )
    return nodes, sources


def split_large_matmuls(
    nodes: list[onnx.NodeProto],
    descriptors: Mapping[str, TensorDescriptor],
    origins: dict[str, str],
    max_bytes: int | None = None,
    parents: dict[str, str] | None = None,
) -> tuple[list[onnx.NodeProto], dict[str, InitializerSource]]:
    """Split every ``MatMulNBits`` whose constant operands are all in ``descriptors`` and
    whose ``B`` exceeds ``max_bytes`` (default :data:`SPLIT_BYTES`) into pieces along
    ``N`` joined by a ``Concat``.

    Returns the new node list and the pieces' initializers (name -> source). ``origins``
    gains an entry for every new node, copied from the node it replaces; ``parents``, if
    given, maps every new node's name to the name of the node it replaces.
    """
    limit = SPLIT_BYTES if max_bytes is None else max_bytes
    result: list[onnx.NodeProto] = []
    sources: dict[str, InitializerSource] = {}
    for node in nodes:
        split = _split_one(node, descriptors, limit)
        if split is None:
            result.append(node)
            continue
        new_nodes, new_sources = split
        result.extend(new_nodes)
        sources.update(new_sources)
        origin = origins.get(node.name)
        for new in new_nodes:
            if origin is not None:
                origins[new.name] = origin
            if parents is not None:
                parents[new.name] = node.name
    return result, sources
