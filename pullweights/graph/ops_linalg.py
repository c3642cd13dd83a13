"""Matrix products: matmul, gemm, and the 4/8-bit block-quantized ``MatMulNBits``."""

from __future__ import annotations

from pullweights.descriptor import TensorDescriptor
from pullweights.dtypes import DataType
from pullweights.errors import GraphError
from pullweights.graph.core import BuilderCore
from pullweights.graph.operand import Operand
from pullweights.graph.ops_elementwise import FLOATS
from pullweights.graph.shapes import broadcast_shapes, same_dim

__all__ = ["LinalgOps"]

#: Types onnxruntime's CPU ``MatMul`` accepts (no 8-bit kernels).
MATMUL_TYPES: tuple[DataType, ...] = ("float32", "float16", "int64", "int32", "uint32")


class LinalgOps(BuilderCore):
    """Matrix products."""

    def matmul(self, a: Operand, b: Operand) -> Operand:
        """Batched matrix product of rank >= 2 operands; batch dims broadcast."""
        self._check_operands("matmul", a, b)
        dtype = self._same_dtype("matmul", a, b)
        self._check_dtype("matmul", a, MATMUL_TYPES, "a")
        if a.rank < 2 or b.rank < 2:
            raise GraphError(f"matmul: operands need rank >= 2, got {a.shape} and {b.shape}")
        same_dim(
            "matmul",
            f"inner dims of {a.origin} {list(a.shape)} and {b.origin} {list(b.shape)}",
            a.shape[-1],
            b.shape[-2],
        )
        batch = broadcast_shapes("matmul", a.shape[:-2], b.shape[:-2])
        shape = (*batch, a.shape[-2], b.shape[-1])
        return self._emit1("MatMul", [a, b], TensorDescriptor(dtype, shape), label="matmul")

    def gemm(
        self,
        a: Operand,
        b: Operand,
        c: Operand | None = None,
        *,
        alpha: float = 1.0,
        beta: float = 1.0,
        a_transpose: bool = False,
        b_transpose: bool = False,
    ) -> Operand:
        """``alpha * A' @ B' + beta * C`` for 2-D ``a``, ``b``; ``c`` broadcasts to [M, N]."""
        self._check_operands("gemm", a, b, c)
        dtype = self._same_dtype("gemm", a, b, *([c] if c is not None else []))
        self._check_dtype("gemm", a, FLOATS, "a")
        if a.rank != 2 or b.rank != 2:
            raise GraphError(f"gemm: a and b must be 2-D, got {a.shape} and {b.shape}")
        m, k = (a.shape[1], a.shape[0]) if a_transpose else a.shape
        kb, n = (b.shape[1], b.shape[0]) if b_transpose else b.shape
        same_dim("gemm", "inner dims", k, kb)
        if c is not None:
            if c.rank > 2:
                raise GraphError(f"gemm: c must have rank <= 2, got {c.shape}")
            if tuple(broadcast_shapes("gemm (c)", c.shape, (m, n))) != (m, n):
                raise GraphError(f"gemm: c {list(c.shape)} does not broadcast to [{m}, {n}]")
        return self._emit1(
            "Gemm",
            [a, b, c],
            TensorDescriptor(dtype, (m, n)),
            label="gemm",
            alpha=float(alpha),
            beta=float(beta),
            transA=int(a_transpose),
            transB=int(b_transpose),
        )

    def matmul_nbits(
        self,
        a: Operand,
        b: Operand,
        scales: Operand,
        zero_points: Operand | None = None,
        *,
        k: int,
        n: int,
        bits: int,
        block_size: int,
        accuracy_level: int = 4,
    ) -> Operand:
        """``a @ W^T`` with ``W[n, k] = (q - zero_point) * scale`` stored block-quantized.

        ``b`` is ``uint8[n, k / block_size, block_size * bits / 8]`` (element j of a block at
        bit offset ``j * bits``, least significant first), ``scales`` holds ``n * n_blocks``
        values of ``a``'s dtype and ``zero_points`` is uint8. They must be weights or
        constants: onnxruntime prepacks them once and runs its fast kernel.
        ``accuracy_level=4`` computes with int8 activations (fastest); 0 keeps ``a`` exact.
        """
        op = "matmul_nbits"
        self._check_operands(op, a, b, scales, zero_points)
        self._check_dtype(op, a, FLOATS, "a")
        if bits not in (2, 4, 8):
            raise GraphError(f"{op}: bits must be 2, 4 or 8, got {bits}")
        if block_size < 16 or block_size & (block_size - 1):
            raise GraphError(f"{op}: block_size must be a power of two >= 16, got {block_size}")
        if accuracy_level not in (0, 1, 2, 3, 4):
            raise GraphError(f"{op}: accuracy_level must be 0..4, got {accuracy_level}")
        n_blocks = -(-k // block_size)
        blob = block_size * bits // 8
        if tuple(b.shape) != (n, n_blocks, blob) or b.dtype != "uint8":
            raise GraphError(
                f"{op}: b {b.origin} must be uint8[{n}, {n_blocks}, {blob}] for k={k}, n={n}, "
                f"bits={bits}, block_size={block_size}; got {b.descriptor}"
            )
        if scales.dtype != a.dtype or not _has_elements(scales, n * n_blocks):
            raise GraphError(
                f"{op}: scales {scales.origin} must hold {n * n_blocks} {a.dtype} values, "
                f"got {scales.descriptor}"
            )
        zp_bytes = n * -(-n_blocks * bits // 8)
        if zero_points is not None and (
            zero_points.dtype != "uint8" or not _has_elements(zero_points, zp_bytes)
        ):
            raise GraphError(
                f"{op}: zero_points must be uint8 holding {zp_bytes} bytes ([{n}, "
                f"{-(-n_blocks * bits // 8)}]: {bits}-bit values packed like b, each row padded "
                f"to whole bytes), got {zero_points.descriptor}"
            )
        if a.rank < 1:
            raise GraphError(f"{op}: a must have rank >= 1")
        same_dim(op, f"last dim of a {list(a.shape)} and k", a.shape[-1], k)
        for x in (b, scales, zero_points):
            if x is not None:
                self._require_constant(op, x)
        out = TensorDescriptor(a.dtype, (*a.shape[:-1], n))
        return self._emit1(
            "MatMulNBits",
            [a, b, scales, zero_points],
            out,
            label=op,
            domain="com.microsoft",
            K=k,
            N=n,
            bits=bits,
            block_size=block_size,
            accuracy_level=accuracy_level,
        )

    def _require_constant(self, op: str, x: Operand) -> None:
        if x.name in self.weights or x.name in self.constants:
            self.constant_required.add(x.name)
            return
        raise GraphError(f"{op}: {x.origin} must be a weight or a constant, not a computed value")


def _has_elements(x: Operand, count: int) -> bool:
    if not x.descriptor.is_static:
        return False
    total = 1
    for d in x.descriptor.static_shape:
        total *= d
    return total == count
