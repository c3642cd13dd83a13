"""GGUF tensors as builder weights: quantized matmuls, embeddings, norms and biases.

Every tensor becomes ``builder.input(..., weight=ref)`` of one GGUF payload, declared once
and shared by every use (a tied output head and the embedding read the same payload):

* quantized matmul weights go through the layout transforms of
  :mod:`pullweights.gguf.layouts` to ``MatMulNBits`` parts (``B``, ``scales``,
  ``zero_points``: initializers, prepacked by onnxruntime). Formats with a per-block float
  min (Q4_K, Q5_K, Q4_1, Q5_1, Q2_K) add the exact correction
  ``- ReduceSum(x per block) @ mins^T`` (a small ``Gemm`` on a bound ``mins`` part);
* embeddings gather rows of the same quantized parts and dequantize only those rows with
  builder ops (``(code - zero_point) * scale - min``), so no float copy of a quantized
  table ever exists;
* F32 tensors (norms, biases, F32 matmuls) are zero-copy views of the file;
* weights that read the same input and share a quantized type (a block's Q/K/V:
  :data:`~pullweights.gguf.stacked.STACKS`) are one payload of their stacked rows and
  one ``MatMulNBits``, split after (:meth:`WeightMap.linears`).

Activations are 2-D ``[tokens, features]`` throughout.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from gguf import GGMLQuantizationType

from pullweights.errors import FormatError, GraphError
from pullweights.gguf.layouts import (
    MatMulNBitsTransform,
    Role,
    choose_transform,
)
from pullweights.gguf.reader import GGUFFile, GGUFTensor
from pullweights.gguf.stacked import (
    MixedStackTransform,
    stack_label,
    stackable,
    stacked_payload,
    stacked_transform,
)
from pullweights.graph.builder import GraphBuilder
from pullweights.graph.operand import Operand
from pullweights.weights import Payload, Transform

__all__ = ["WeightMap"]


class WeightMap:
    """Declares the tensors of one GGUF file in one builder, each payload once.

    A tensor's layout is :func:`~pullweights.gguf.layouts.choose_transform`'s for its
    first role, nothing else (so ``pullweights inspect`` shows what is built): quantized
    matrices (``matmul``, ``embedding``) get the ``MatMulNBits`` layout, F32 tensors are
    views, and other float types (F16, BF16, F64; :mod:`pullweights.gguf.plain`) are
    dequantized to float32 for matrices (cached) or viewed and cast in the graph for norms.

    Args:
        builder: the graph under construction.
        gguf: the open GGUF file.
        accuracy_level: ``MatMulNBits`` accuracy level; ``None`` uses each layout's
            recommendation (4: int8 activations, fastest); 0 keeps activations exact.
        stack: run weights that read one input as one matmul where they stack
            (:meth:`linears`); False: one matmul each.
    """

    def __init__(
        self,
        builder: GraphBuilder,
        gguf: GGUFFile,
        *,
        accuracy_level: int | None = None,
        stack: bool = True,
    ) -> None:
        self.builder = builder
        self.gguf = gguf
        self.accuracy_level = accuracy_level
        self.stack = stack
        self._payloads: dict[str, Payload] = {}
        self._operands: dict[str, Operand] = {}
        self._block_sums: dict[tuple[str, int, int], Operand] = {}

    # ------------------------------------------------------------------ lookup
    @property
    def payloads(self) -> list[Payload]:
        """Every payload declared so far, once each."""
        return list(self._payloads.values())

    def has(self, name: str) -> bool:
        """True when the file has tensor ``name``."""
        return name in self.gguf.tensors

    def tensor(self, name: str) -> GGUFTensor:
        """The GGUF tensor ``name`` (``FormatError`` naming the file when absent)."""
        return self.gguf.tensor(name)

    # ------------------------------------------------------------------ declarations
    def raw(self, name: str, shape: tuple[int, ...] | None = None) -> Operand:
        """A small dense tensor (norm weight, bias) as float32: a zero-copy view when F32."""
        tensor = self.tensor(name)
        if shape is not None and tensor.shape != shape:
            raise FormatError(f"{name}: shape {tensor.shape}, expected {shape}")
        x = self._declare(name, "data", "dense")
        return x if x.dtype == "float32" else self.builder.cast(x, "float32")

    def _payload(self, name: str, role: Role) -> Payload:
        payload = self._payloads.get(name)
        if payload is None:
            tensor = self.tensor(name)
            transform = choose_transform(tensor.ggml_type, tensor.shape, role)
            payload = tensor.payload(transform)
            self._payloads[name] = payload
        return payload

    def _quantized(self, name: str, role: Role) -> MatMulNBitsTransform | None:
        """The tensor's ``MatMulNBits`` layout, or None when it is a float32 array."""
        transform = self._payload(name, role).transform
        return transform if isinstance(transform, MatMulNBitsTransform) else None

    def _declare(self, name: str, part: str, role: Role) -> Operand:
        key = name if part == "data" else f"{name}.{part}"
        operand = self._operands.get(key)
        if operand is None:
            ref = self._payload(name, role).ref(part)
            operand = self.builder.input(key, ref.descriptor, weight=ref)
            self._operands[key] = operand
        return operand

    # ------------------------------------------------------------------ ops
    def linear(self, x: Operand, name: str, bias: str | None = None) -> Operand:
        """``x[T, K] @ W^T (+ bias)`` for the GGUF weight ``name`` of numpy shape ``(N, K)``."""
        b = self.builder
        tensor = self.tensor(name)
        if len(tensor.shape) != 2 or tensor.shape[1] != x.shape[-1]:
            raise FormatError(
                f"{name}: shape {tensor.shape} does not take inputs of {x.shape[-1]} features"
            )
        t = self._quantized(name, "matmul")
        if t is None:
            y = b.gemm(x, self._declare(name, "data", "matmul"), b_transpose=True)
        else:
            y = self._matmul_nbits(x, name, t)
        if bias is not None and self.has(bias):
            y = b.add(y, self.raw(bias, (tensor.shape[0],)))
        return y

    def linears(
        self, x: Operand, names: Sequence[str], biases: Sequence[str | None] | None = None
    ) -> list[Operand]:
        """:meth:`linear` of each weight in ``names`` over the same ``x``, in order.

        Weights whose ``MatMulNBits`` layouts share width and block (a layer's Q/K/V)
        run as one ``MatMulNBits`` over their stacked rows
        (:func:`~pullweights.gguf.stacked.stacked_transform`), whose output is split: at
        M = 1 and 2 threads one call over 1,152 rows takes ~9 us less than three over
        896 + 128 + 128 (``benchmarks/bench_fusion.py``). Their biases, if every weight
        has one, are one stacked vector added before the split. Other weights (4-bit
        with 8-bit, float matrices, ``stack=False``) run one by one.
        """
        bias_names = list(biases) if biases is not None else [None] * len(names)
        if len(bias_names) != len(names):
            raise GraphError(f"linears: {len(names)} weights but {len(bias_names)} biases")
        tensors = [self.tensor(n) for n in names]
        t = self._stacked_transform(x, tensors)
        if t is None:
            return [self.linear(x, n, bias) for n, bias in zip(names, bias_names, strict=True)]
        b = self.builder
        y = self._matmul_nbits(x, self._stack(tensors, t), t)
        bias = self._stacked_bias(tensors, bias_names)
        if bias is not None:
            # Added before the split, a bias is folded into MatMulNBits by onnxruntime as
            # for one weight: the same float sums, one node.
            y = b.add(y, bias)
        outs = b.split(y, [tensor.shape[0] for tensor in tensors], axis=-1)
        return [
            b.add(out, self.raw(name, (tensor.shape[0],)))
            if bias is None and name is not None and self.has(name)
            else out
            for out, tensor, name in zip(outs, tensors, bias_names, strict=True)
        ]

    def _stacked_bias(
        self, weights: Sequence[GGUFTensor], names: Sequence[str | None]
    ) -> Operand | None:
        """Every weight's bias as one F32 vector of the stacked rows (a payload of their
        stacked bytes), or None when some weight has none or they do not stack."""
        if not all(name is not None and self.has(name) for name in names):
            return None
        tensors = [self.tensor(name) for name in names if name is not None]
        if not stackable(tensors) or any(
            t.ggml_type != GGMLQuantizationType.F32 or t.shape != (w.shape[0],)
            for t, w in zip(tensors, weights, strict=True)
        ):
            return None
        return self._declare(self._stack(tensors), "data", "dense")

    def _stack(self, tensors: Sequence[GGUFTensor], transform: Transform | None = None) -> str:
        """Declare the stacked payload of ``tensors`` once; its name (what
        :meth:`_declare` looks it up by)."""
        label = stack_label(tensors)
        if label not in self._payloads:
            self._payloads[label] = stacked_payload(tensors, transform)
        return label

    def _stacked_transform(
        self, x: Operand, tensors: Sequence[GGUFTensor]
    ) -> MatMulNBitsTransform | MixedStackTransform | None:
        """The ``MatMulNBits`` layout of ``tensors`` stacked by rows, or None when they
        do not stack (or stacking is off)."""
        if not self.stack or any(t.name in self._payloads for t in tensors):
            return None  # a tensor declared on its own already (never for these roles)
        if tensors and tensors[0].shape[-1] != x.shape[-1]:
            return None  # a shape error for linear() to report
        return stacked_transform(tensors)

    def _matmul_nbits(
        self, x: Operand, name: str, t: MatMulNBitsTransform | MixedStackTransform
    ) -> Operand:
        b = self.builder
        level = t.accuracy_level if self.accuracy_level is None else self.accuracy_level
        y = b.matmul_nbits(
            x,
            self._declare(name, "B", "matmul"),
            self._declare(name, "scales", "matmul"),
            self._declare(name, "zero_points", "matmul"),
            k=t.k,
            n=t.n,
            bits=t.bits,
            block_size=t.block_size,
            accuracy_level=level,
        )
        if not t.has_mins:
            return y
        # Exact min term: y - (sum of x over each block) @ mins^T, one Gemm. The block
        # sums of one input are made once for every weight that reads it (Q, K and V;
        # gate and up): fewer nodes per decode step.
        key = (x.name, t.n_blocks, t.block_size)
        sums = self._block_sums.get(key)
        if sums is None:
            blocks = b.reshape(x, (x.shape[0], t.n_blocks, t.block_size))
            sums = b.reduce_sum(blocks, axes=[2], keep_dims=False)
            self._block_sums[key] = sums
        mins = self._declare(name, "mins", "matmul")
        return b.gemm(sums, mins, y, alpha=-1.0, beta=1.0, b_transpose=True)

    def embedding(self, ids: Operand, name: str) -> Operand:
        """Rows ``ids[T]`` of the table ``name`` as ``float32[T, K]``.

        Quantized tables are gathered in their ``MatMulNBits`` layout and only the gathered
        rows are dequantized.
        """
        b = self.builder
        tensor = self.tensor(name)
        if len(tensor.shape) != 2:
            raise FormatError(f"{name}: an embedding table must be 2-D, got {tensor.shape}")
        t = self._quantized(name, "embedding")
        if t is None:
            return b.gather(self._declare(name, "data", "embedding"), ids, axis=0)
        tokens = ids.shape[0]

        def part(p: str) -> Operand:
            return self._declare(name, p, "embedding")

        rows = b.gather(part("B"), ids, axis=0)  # uint8[T, blocks, blob]
        codes = _unpack_codes(b, b.cast(rows, "float32"), t.bits)  # float32[T, blocks, bs]
        scales = b.reshape(b.gather(part("scales"), ids, axis=0), (tokens, t.n_blocks, 1))
        zero = b.constant(np.float32(t.zero_point))
        w = b.mul(b.sub(codes, zero), scales)
        if t.has_mins:
            mins = b.gather(part("mins"), ids, axis=0)
            w = b.sub(w, b.reshape(mins, (tokens, t.n_blocks, 1)))
        return b.reshape(w, (tokens, t.k))


def _unpack_codes(b: GraphBuilder, packed: Operand, bits: int) -> Operand:
    """``float32[..., n * 8 / bits]`` codes from bytes ``float32[..., n]`` packed LSB first."""
    if bits == 8:
        return packed
    per_byte = 8 // bits
    shape = packed.shape
    last = shape[-1]
    if not isinstance(last, int):
        raise GraphError(f"unpack codes: the byte axis of {packed.shape} must be static")
    fields: list[Operand] = []
    whole = packed
    for i in range(per_byte):
        if i + 1 < per_byte:
            rest = b.floor(b.mul(packed, b.constant(np.float32(2.0 ** (-bits * (i + 1))))))
            field = b.sub(whole, b.mul(rest, b.constant(np.float32(2.0**bits))))
        else:
            rest, field = whole, whole
        fields.append(b.reshape(field, (*shape, 1)))
        whole = rest
    stacked = b.concat(fields, axis=len(shape))
    return b.reshape(stacked, (*shape[:-1], last * per_byte))
