"""Transformer ops that onnxruntime provides as contrib kernels.

``rotary_embedding`` (com.microsoft.RotaryEmbedding), ``group_query_attention``
(com.microsoft.GroupQueryAttention, with past key/value cache) and
``gather_block_quantized`` (com.microsoft.GatherBlockQuantized), so model builders never
write raw ONNX.
"""

from __future__ import annotations

from pullweights.descriptor import Dim, TensorDescriptor
from pullweights.errors import GraphError
from pullweights.graph.core import BuilderCore
from pullweights.graph.operand import Operand
from pullweights.graph.ops_elementwise import FLOATS
from pullweights.graph.ops_shape import _sum_dims
from pullweights.graph.shapes import same_dim

__all__ = ["TransformerOps"]

MS = "com.microsoft"


class TransformerOps(BuilderCore):
    """Rotary embedding, grouped-query attention and quantized gather."""

    def rotary_embedding(
        self,
        x: Operand,
        position_ids: Operand,
        cos_cache: Operand,
        sin_cache: Operand,
        *,
        num_heads: int = 0,
        rotary_dim: int = 0,
        interleaved: bool = False,
    ) -> Operand:
        """Rotate pairs of ``x[B, S, heads * head_dim]`` (or ``[B, heads, S, head_dim]``).

        ``interleaved`` pairs elements (2i, 2i+1) as llama.cpp's "normal" RoPE does;
        otherwise (i, i + d/2) (NeoX, ``rotate_half``). ``cos_cache``/``sin_cache`` are
        ``[max_position, rotary_dim / 2]``; ``position_ids`` is int64 ``[B, S]``.
        """
        op = "rotary_embedding"
        self._check_operands(op, x, position_ids, cos_cache, sin_cache)
        self._check_dtype(op, x, FLOATS, "input")
        self._check_dtype(op, position_ids, ("int64",), "position_ids")
        self._same_dtype(op, x, cos_cache, sin_cache)
        if x.rank not in (3, 4):
            raise GraphError(f"{op}: input must be 3-D or 4-D, got {list(x.shape)}")
        if x.rank == 3 and num_heads <= 0:
            raise GraphError(f"{op}: num_heads is required for a 3-D input")
        if cos_cache.rank != 2 or tuple(cos_cache.shape) != tuple(sin_cache.shape):
            raise GraphError(f"{op}: cos and sin caches must both be [max_position, dim / 2]")
        return self._emit1(
            "RotaryEmbedding",
            [x, position_ids, cos_cache, sin_cache],
            x.descriptor,
            label=op,
            domain=MS,
            interleaved=int(interleaved),
            num_heads=num_heads or None,
            rotary_embedding_dim=rotary_dim or None,
        )

    def group_query_attention(
        self,
        query: Operand,
        key: Operand,
        value: Operand,
        past_key: Operand,
        past_value: Operand,
        seqlens_k: Operand,
        total_sequence_length: Operand,
        *,
        num_heads: int,
        kv_num_heads: int,
        scale: float | None = None,
        local_window_size: int = -1,
        softcap: float = 0.0,
        cos_cache: Operand | None = None,
        sin_cache: Operand | None = None,
        rotary_interleaved: bool = False,
    ) -> tuple[Operand, Operand, Operand]:
        """Causal attention of ``query[B, S, num_heads * H]`` over a key/value cache.

        ``past_key``/``past_value`` are ``[B, kv_num_heads, P, H]``. When ``P`` is static
        the cache is a preallocated buffer updated in place (bind the same tensor as past
        and present); ``seqlens_k`` (int32 ``[B]``) holds ``total - 1`` and
        ``total_sequence_length`` (int32 scalar) the total length. Returns
        ``(output, present_key, present_value)``. Passing ``cos_cache``/``sin_cache``
        applies rotary embedding inside the op.
        """
        op = "group_query_attention"
        self._check_operands(
            op,
            query,
            key,
            value,
            past_key,
            past_value,
            seqlens_k,
            total_sequence_length,
            cos_cache,
            sin_cache,
        )
        dtype = self._same_dtype(op, query, key, value, past_key, past_value)
        self._check_dtype(op, query, FLOATS, "query")
        self._check_dtype(op, seqlens_k, ("int32",), "seqlens_k")
        self._check_dtype(op, total_sequence_length, ("int32",), "total_sequence_length")
        if num_heads <= 0 or kv_num_heads <= 0 or num_heads % kv_num_heads:
            raise GraphError(
                f"{op}: num_heads {num_heads} must be a positive multiple of "
                f"kv_num_heads {kv_num_heads}"
            )
        if query.rank != 3 or key.rank != 3 or value.rank != 3:
            raise GraphError(f"{op}: query, key and value must be [B, S, hidden]")
        if past_key.rank != 4 or tuple(past_key.shape) != tuple(past_value.shape):
            raise GraphError(f"{op}: past_key and past_value must both be [B, kv_heads, P, H]")
        q_hidden = query.shape[2]
        if not isinstance(q_hidden, int) or q_hidden % num_heads:
            raise GraphError(f"{op}: query hidden {q_hidden} must be divisible by {num_heads}")
        head = q_hidden // num_heads
        batch, seq = query.shape[0], query.shape[1]
        for name, x in (("key", key), ("value", value)):
            same_dim(op, f"{name} shape", tuple(x.shape), (batch, seq, kv_num_heads * head))  # type: ignore[arg-type]
        same_dim(
            op,
            "past_key shape [B, kv_heads, _, H]",
            (past_key.shape[0], past_key.shape[1], past_key.shape[3]),  # type: ignore[arg-type]
            (batch, kv_num_heads, head),
        )  # type: ignore[arg-type]
        past = past_key.shape[2]
        total = past if isinstance(past, int) else _sum_dims([past, seq])
        if isinstance(total, Dim):
            total = Dim(f"{total.name}_present", total.min_size, total.max_size)
        present = TensorDescriptor(dtype, (batch, kv_num_heads, total, head))
        out = TensorDescriptor(dtype, query.shape)
        do_rotary = cos_cache is not None
        if do_rotary != (sin_cache is not None):
            raise GraphError(f"{op}: pass both cos_cache and sin_cache, or neither")
        results = self._emit(
            "GroupQueryAttention",
            [
                query,
                key,
                value,
                past_key,
                past_value,
                seqlens_k,
                total_sequence_length,
                cos_cache,
                sin_cache,
            ],
            [out, present, present],
            label=op,
            domain=MS,
            num_heads=num_heads,
            kv_num_heads=kv_num_heads,
            scale=None if scale is None else float(scale),
            local_window_size=local_window_size if local_window_size != -1 else None,
            softcap=float(softcap) if softcap else None,
            do_rotary=int(do_rotary) if do_rotary else None,
            rotary_interleaved=int(rotary_interleaved) if do_rotary else None,
        )
        return results[0], results[1], results[2]

    def gather_block_quantized(
        self,
        data: Operand,
        indices: Operand,
        scales: Operand,
        zero_points: Operand | None = None,
        *,
        k: int,
        bits: int,
        block_size: int,
        dtype: str = "float32",
    ) -> Operand:
        """Gather rows of a block-quantized ``[rows, k]`` table and dequantize only them.

        ``data`` is uint8 ``[rows, k * bits / 8]``; ``scales`` ``[rows, k / block_size]``.
        Output: ``indices.shape + [k]`` of ``dtype``.
        """
        op = "gather_block_quantized"
        self._check_operands(op, data, indices, scales, zero_points)
        self._check_dtype(op, indices, ("int64", "int32"), "indices")
        if bits not in (4, 8):
            raise GraphError(f"{op}: bits must be 4 or 8, got {bits}")
        if data.dtype != "uint8" or data.rank != 2 or data.shape[1] != k * bits // 8:
            raise GraphError(
                f"{op}: data must be uint8[rows, {k * bits // 8}], got {data.descriptor}"
            )
        if scales.dtype != dtype or tuple(scales.shape) != (data.shape[0], k // block_size):
            raise GraphError(
                f"{op}: scales must be {dtype}[{data.shape[0]}, {k // block_size}], "
                f"got {scales.descriptor}"
            )
        out = TensorDescriptor(dtype, (*indices.shape, k))
        return self._emit1(
            "GatherBlockQuantized",
            [data, indices, scales, zero_points],
            out,
            label=op,
            domain=MS,
            bits=bits,
            block_size=block_size,
            gather_axis=0,
            quantize_axis=1,
        )
