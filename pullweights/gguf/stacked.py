"""Several GGUF tensors read as one payload, their rows laid end to end.

Weights that read the same input (a layer's Q, K and V projections: :data:`STACKS`) can
run as one ``MatMulNBits`` over their stacked rows: fewer, larger kernel calls per step
(see :meth:`loaders.weights.WeightMap.linears`). A row-major tensor is a run of whole
rows, so the stacked tensor's raw bytes are the tensors' bytes one after the other: one
range when the file holds them back to back (files written in block order), else a
:class:`~pullweights.sources.ConcatSource` of :class:`~pullweights.sources.SliceSource`
ranges of the file (files in name order, or with other tensors between). Either way the
cache keeps the stacked entry under the file's model (the slices' model source).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from pullweights.descriptor import TensorDescriptor
from pullweights.errors import FormatError
from pullweights.gguf.layouts import MatMulNBitsTransform, choose_transform
from pullweights.gguf.layouts.matmul_nbits import nbits_outputs
from pullweights.gguf.reader import GGUFTensor
from pullweights.sources.concat import ConcatSource
from pullweights.sources.slice import SliceSource
from pullweights.weights import Payload, Transform

__all__ = [
    "STACKS",
    "MixedStackTransform",
    "stack_label",
    "stack_members",
    "stack_of",
    "stackable",
    "stacked_payload",
    "stacked_transform",
]

#: Weights of one block that read the same input (llama.cpp names, without the block
#: prefix): where a group stacks, a load runs it as one matmul. Gate and up read one
#: input too, but stacking them measured no faster for qwen2.5-0.5b (45.2 vs 44.9 ms a
#: step with Q/K/V alone) and its warm load peaked ~50 MiB higher (re-opening a saved
#: stage packs its largest weight at once, and gate+up is twice the largest), so they
#: stay apart (``benchmarks/bench_fusion.py``).
STACKS: dict[str, tuple[str, ...]] = {
    "attn_qkv": ("attn_q", "attn_k", "attn_v"),
}


def stack_members(prefix: str, stack: str, suffix: str = "weight") -> list[str]:
    """The tensor names of ``stack`` in the block ``prefix``: ``stack_members("blk.3.",
    "attn_qkv", "bias")`` is ``["blk.3.attn_q.bias", "blk.3.attn_k.bias",
    "blk.3.attn_v.bias"]``."""
    return [f"{prefix}{member}.{suffix}" for member in STACKS[stack]]


def stack_of(name: str) -> list[str] | None:
    """The names of the stack tensor ``name`` belongs to (None: none)."""
    parts = name.split(".")
    if len(parts) < 3 or parts[-1] != "weight":
        return None
    block, member = ".".join(parts[:-2]), parts[-2]
    for stack, members in STACKS.items():
        if member in members:
            return stack_members(block + ".", stack)
    return None


def stack_label(tensors: Sequence[GGUFTensor]) -> str:
    """The name of a stack's payload: its tensors' names joined by ``+``."""
    return "+".join(t.name for t in tensors)


def stackable(tensors: Sequence[GGUFTensor]) -> bool:
    """True when ``tensors`` can be stacked by rows: one ggml type, the same shape after
    the first axis (a matrix's row length; nothing for vectors such as biases), one
    source."""
    first = tensors[0]
    return all(
        len(t.shape) >= 1
        and t.ggml_type == first.ggml_type
        and t.shape[1:] == first.shape[1:]
        and t.source is first.source
        for t in tensors
    )


class MixedStackTransform(Transform):
    """Weights of different ggml types whose ``MatMulNBits`` layouts share their width and
    block (Q5_0 and Q8_0 are both 8-bit, block 32) as one set of ``MatMulNBits`` parts:
    each weight's rows in its own exact layout (so its own zero point, per row), and the
    float mins of those that have them, 0 for the others. Works on the whole payload
    (the raw rows differ in length), which for a block's Q/K/V is under a few MiB.

    Raises:
        FormatError: layouts of other widths, blocks or row lengths.
    """

    name = "gguf.matmul_nbits_stack"
    version = 1

    def __init__(self, parts: Sequence[MatMulNBitsTransform]) -> None:
        first = parts[0]
        if len(parts) < 2 or any(
            (p.k, p.bits, p.block_size) != (first.k, first.bits, first.block_size) for p in parts
        ):
            raise FormatError(
                "layouts of "
                + ", ".join(p.ggml_type.name for p in parts)
                + " cannot be stacked: their widths, blocks or row lengths differ"
            )
        self.parts = list(parts)
        self.k, self.n = first.k, sum(p.n for p in parts)
        self.bits, self.block_size, self.n_blocks = first.bits, first.block_size, first.n_blocks
        self.has_mins = any(p.has_mins for p in parts)
        self.accuracy_level = first.accuracy_level

    @property
    def outputs(self) -> Mapping[str, TensorDescriptor]:
        return nbits_outputs(self.n, self.n_blocks, self.bits, self.block_size, self.has_mins)

    @property
    def params(self) -> str:
        return " + ".join(p.params for p in self.parts)

    def describe(self) -> str:
        """E.g. ``MatMulNBits 8-bit b32 exact, stacked from Q5_0 + Q5_0 + Q8_0``."""
        types = " + ".join(p.ggml_type.name for p in self.parts)
        return f"{self.parts[0].describe()}, stacked from {types}"

    def apply(self, raw: npt.NDArray[np.uint8]) -> dict[str, np.ndarray]:
        """Each part's layout of its own rows of ``raw``, concatenated by rows."""
        flat = raw.reshape(-1)
        pieces = []
        start = 0
        for part in self.parts:
            stop = start + part.n * part.row_bytes
            arrays = part.apply(flat[start:stop])
            if self.has_mins and "mins" not in arrays:
                arrays["mins"] = np.zeros((part.n, self.n_blocks), np.float32)
            pieces.append(arrays)
            start = stop
        if start != flat.size:
            raise FormatError(f"{self.params}: {flat.size} raw bytes, expected {start}")
        return {name: np.concatenate([p[name] for p in pieces]) for name in self.outputs}


def stacked_transform(
    tensors: Sequence[GGUFTensor],
) -> MatMulNBitsTransform | MixedStackTransform | None:
    """The ``MatMulNBits`` layout of ``tensors`` stacked by rows; None when they do not
    stack (fewer than two, not 2-D matrices of one row length in one source, a type
    without that layout, or layouts of other widths or blocks)."""
    if len(tensors) < 2:
        return None
    first = tensors[0]
    if any(
        len(t.shape) != 2 or t.shape[1] != first.shape[1] or t.source is not first.source
        for t in tensors
    ):
        return None
    if stackable(tensors):
        rows = sum(t.shape[0] for t in tensors)
        one = choose_transform(first.ggml_type, (rows, first.shape[1]), "matmul")
        return one if isinstance(one, MatMulNBitsTransform) else None
    layouts = [choose_transform(t.ggml_type, t.shape, "matmul") for t in tensors]
    if not all(isinstance(t, MatMulNBitsTransform) for t in layouts):
        return None
    nbits = [t for t in layouts if isinstance(t, MatMulNBitsTransform)]
    if any((t.bits, t.block_size) != (nbits[0].bits, nbits[0].block_size) for t in nbits):
        return None
    return MixedStackTransform(nbits)


def stacked_payload(tensors: Sequence[GGUFTensor], transform: Transform | None = None) -> Payload:
    """The rows of ``tensors`` (in order) as one payload: for ``transform`` (made for the
    stacked shape ``(sum of rows, row length)``), or without one viewed as they are (a
    plain type such as the F32 biases of a stacked matmul).

    Raises:
        FormatError: fewer than two tensors, or tensors that are not :func:`stackable`.
        UnsupportedError: no transform for a type without a raw view.
    """
    same_source = all(t.source is tensors[0].source for t in tensors)
    if len(tensors) < 2 or not same_source or (transform is None and not stackable(tensors)):
        names = ", ".join(t.name for t in tensors)
        raise FormatError(f"tensors {names} cannot be stacked (one source; views: one type)")
    first = tensors[0]
    source = first.source
    label = stack_label(tensors)
    length = sum(t.nbytes for t in tensors)
    raw = None
    if transform is None:  # raises for a type without a raw view, naming the tensor
        rows = sum(t.shape[0] for t in tensors)
        whole = replace(first, shape=(rows, *first.shape[1:]), nbytes=length)
        raw = whole.payload().raw_descriptor
    adjacent = all(a.offset + a.nbytes == b.offset for a, b in itertools.pairwise(tensors))
    if adjacent:
        where, offset = source, first.offset
    else:
        slices = [SliceSource(source, t.offset, t.nbytes) for t in tensors]
        where, offset = ConcatSource(slices, name=f"{source.name} ({label})"), 0
    if raw is None:
        return Payload(where, offset, length, transform, label=label)
    return Payload(where, offset, length, raw_descriptor=raw, label=label)
