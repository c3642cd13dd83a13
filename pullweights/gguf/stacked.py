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
from collections.abc import Sequence
from dataclasses import replace

from pullweights.errors import FormatError
from pullweights.gguf.layouts import MatMulNBitsTransform, choose_transform
from pullweights.gguf.reader import GGUFTensor
from pullweights.sources.concat import ConcatSource
from pullweights.sources.slice import SliceSource
from pullweights.weights import Payload, Transform

__all__ = [
    "STACKS",
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
    prefix, _, rest = name.rpartition(".")[0].rpartition(".")
    if not prefix or rest == "" or name.rpartition(".")[2] != "weight":
        return None
    for stack, members in STACKS.items():
        if rest in members:
            return stack_members(prefix + ".", stack)
    return None


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


def stacked_transform(tensors: Sequence[GGUFTensor]) -> MatMulNBitsTransform | None:
    """The ``MatMulNBits`` layout of ``tensors`` stacked by rows; None when they do not
    stack (fewer than two, not :func:`stackable`, or a type without that layout)."""
    if len(tensors) < 2 or not stackable(tensors) or len(tensors[0].shape) != 2:
        return None
    first = tensors[0]
    rows = sum(t.shape[0] for t in tensors)
    transform = choose_transform(first.ggml_type, (rows, first.shape[1]), "matmul")
    return transform if isinstance(transform, MatMulNBitsTransform) else None


def stacked_payload(tensors: Sequence[GGUFTensor], transform: Transform | None = None) -> Payload:
    """The rows of ``tensors`` (in order) as one payload: for ``transform`` (made for the
    stacked shape ``(sum of rows, row length)``), or without one viewed as they are (a
    plain type such as the F32 biases of a stacked matmul).

    Raises:
        FormatError: fewer than two tensors, or tensors that are not :func:`stackable`.
        UnsupportedError: no transform for a type without a raw view.
    """
    if len(tensors) < 2 or not stackable(tensors):
        names = ", ".join(t.name for t in tensors)
        raise FormatError(f"tensors {names} cannot be stacked (one type and row shape)")
    first = tensors[0]
    source = first.source
    label = "+".join(t.name for t in tensors)
    length = sum(t.nbytes for t in tensors)
    view = None
    if transform is None:
        rows = sum(t.shape[0] for t in tensors)
        view = replace(first, shape=(rows, *first.shape[1:]), nbytes=length)
        view.payload()  # raises for a type without a raw view, naming the tensor
    adjacent = all(a.offset + a.nbytes == b.offset for a, b in itertools.pairwise(tensors))
    if adjacent:
        where, offset = source, first.offset
    else:
        slices = [SliceSource(source, t.offset, t.nbytes) for t in tensors]
        where, offset = ConcatSource(slices, name=f"{source.name} ({label})"), 0
    if view is None:
        return Payload(where, offset, length, transform, label=label)
    raw = view.payload().raw_descriptor
    return Payload(where, offset, length, raw_descriptor=raw, label=label)
