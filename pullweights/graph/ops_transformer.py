"""Transformer ops that onnxruntime provides as contrib kernels.

``rotary_embedding`` (com.microsoft.RotaryEmbedding), ``group_query_attention``
(com.microsoft.GroupQueryAttention, with past key/value cache) and
``gather_block_quantized`` (com.microsoft.GatherBlockQuantized), so model builders never
write raw ONNX.
"""

from __future__ import annotations

from pullweights.descriptor import Dim, DimLike, TensorDescriptor
from pullweights.errors import GraphError
from pullweights.graph.core import BuilderCore
from pullweights.graph.operand import Operand
from pullweights.graph.ops_elementwise import FLOATS
from pullweights.graph.ops_shape import _sum_dims

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
        otherwise (i, i + d/2) (NeoX, ``rotate_half``). Only the first ``rotary_dim``
        elements of each head rotate (default: all); the rest pass through.
        ``cos_cache``/``sin_cache`` are ``[max_position, rotary_dim / 2]``.
        ``position_ids`` is int64 ``[B, S]`` (the position of every token), or a
        one-element ``[1]`` tensor holding the position of the first token (token ``s``
        then sits at ``offset + s``). ``num_heads`` is required for a 3-D input.
        """
        op = "rotary_embedding"
        self._check_operands(op, x, position_ids, cos_cache, sin_cache)
        self._check_dtype(op, x, FLOATS, "input")
        self._check_dtype(op, position_ids, ("int64",), "position_ids")
        self._same_dtype(op, x, cos_cache, sin_cache)
        if x.rank not in (3, 4):
            raise GraphError(f"{op}: input must be 3-D or 4-D, got {list(x.shape)}")
        if position_ids.rank not in (1, 2) or (
            position_ids.rank == 1 and position_ids.shape[0] != 1
        ):
            raise GraphError(
                f"{op}: position_ids must be [B, S] or a one-element offset [1], "
                f"got {list(position_ids.shape)}"
            )
        if x.rank == 3:
            hidden = x.shape[2]
            if num_heads <= 0:
                raise GraphError(f"{op}: num_heads is required for a 3-D input")
            if not isinstance(hidden, int) or hidden % num_heads:
                raise GraphError(f"{op}: hidden size {hidden!r} is not divisible by {num_heads}")
            head = hidden // num_heads
        else:
            heads, head_dim = x.shape[1], x.shape[3]
            if not isinstance(heads, int) or not isinstance(head_dim, int):
                raise GraphError(f"{op}: heads and head size must be static, got {list(x.shape)}")
            if num_heads not in (0, heads):
                raise GraphError(f"{op}: num_heads {num_heads} != dim 1 of {list(x.shape)}")
            # onnxruntime needs num_heads whenever rotary_embedding_dim is set.
            num_heads, head = heads, head_dim
        rot = rotary_dim or head
        if rot % 2 or not 0 < rot <= head:
            raise GraphError(f"{op}: rotary_dim {rot} must be even and in 1..{head}")
        if (
            cos_cache.rank != 2
            or tuple(cos_cache.shape) != tuple(sin_cache.shape)
            or cos_cache.shape[1] != rot // 2
        ):
            raise GraphError(
                f"{op}: cos and sin caches must both be [max_position, {rot // 2}] "
                f"(rotary_dim / 2), got {list(cos_cache.shape)} and {list(sin_cache.shape)}"
            )
        return self._emit1(
            "RotaryEmbedding",
            [x, position_ids, cos_cache, sin_cache],
            x.descriptor,
            label=op,
            domain=MS,
            interleaved=int(interleaved),
            num_heads=num_heads,
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

        ``key``/``value`` are ``[B, S, kv_num_heads * H]`` (H a multiple of 8),
        ``past_key``/``past_value`` ``[B, kv_num_heads, P, H]``. Returns ``(output,
        present_key, present_value)``; the presents hold ``max(total_sequence_length, P)``
        rows. Two ways to keep the cache (both measured against a numpy reference):

        * **concat** (``P`` symbolic, e.g. ``Dim("past", 0, max)``): each call returns new
          presents ``[B, kv, P + S, H]`` (past rows, then the new ones); feed them back as
          the next past. The first call passes an empty ``[B, kv, 0, H]`` past.
        * **shared buffer** (``P`` static = the longest sequence): create the caches once
          with ``Tensor.create`` and, in :meth:`Graph.dispatch`, bind the *same* tensor
          as ``past_key`` input and ``present_key`` output (same for values).
          onnxruntime sees the shared pointer and writes only the ``S`` new rows in
          place. (With distinct buffers, e.g. in ``compute``, it copies the past first.)

        ``seqlens_k`` (int32 ``[B]``) is, per batch row, ``past_b + new_b - 1``: the index
        of its last valid key. The new keys go to rows ``past_b = seqlens_k[b] + 1 - S``
        onward, so rows may be right-padded: a prompt of ``new_b <= S`` valid tokens
        passes ``new_b - 1``. Cache rows beyond ``seqlens_k[b]`` are never read.
        ``total_sequence_length`` (int32 scalar or ``[1]``) is ``max_b(past_b + new_b)``;
        when it equals ``S`` the call is a first prompt (the cache is not read, keys go to
        row 0). Otherwise ``S`` must be 1 (decoding) unless ``B == 1`` (a later chunk of
        a prompt).

        ``scale`` defaults to ``1 / sqrt(H)``. ``softcap`` (> 0) maps scaled scores to
        ``softcap * tanh(score / softcap)`` before the softmax. ``local_window_size=W``
        lets a query at position ``i`` see only keys ``i - W < j <= i`` (W keys, itself
        included, as transformers' ``sliding_window``). ``cos_cache``/``sin_cache``
        (``[max_total, rotary_dim / 2]``, rotary_dim / 2 a multiple of 8, H a multiple of
        16) rotate query and key inside the op at positions ``past_b + s``; the cache
        then holds rotated keys.
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
        if seqlens_k.rank != 1 or total_sequence_length.rank > 1:
            raise GraphError(
                f"{op}: seqlens_k must be [B] and total_sequence_length a scalar, got "
                f"{list(seqlens_k.shape)} and {list(total_sequence_length.shape)}"
            )
        if past_key.rank != 4 or tuple(past_key.shape) != tuple(past_value.shape):
            raise GraphError(f"{op}: past_key and past_value must both be [B, kv_heads, P, H]")
        q_hidden = query.shape[2]
        if not isinstance(q_hidden, int) or q_hidden % num_heads:
            raise GraphError(f"{op}: query hidden {q_hidden} must be divisible by {num_heads}")
        head = q_hidden // num_heads
        if head % 8:
            raise GraphError(f"{op}: head size {head} must be a multiple of 8 (onnxruntime)")
        batch, seq = query.shape[0], query.shape[1]
        for name, x in (("key", key), ("value", value)):
            if tuple(x.shape) != (batch, seq, kv_num_heads * head):
                raise GraphError(
                    f"{op}: {name} {x.origin} must be [{batch!r}, {seq!r}, "
                    f"{kv_num_heads * head}], got {list(x.shape)}"
                )
        kv_shape = (past_key.shape[0], past_key.shape[1], past_key.shape[3])
        if kv_shape != (batch, kv_num_heads, head):
            raise GraphError(
                f"{op}: past_key must be [{batch!r}, {kv_num_heads}, P, {head}], "
                f"got {list(past_key.shape)}"
            )
        past = past_key.shape[2]
        # A static past is a preallocated buffer: presents keep its length. An empty static
        # past (a prompt-only graph) yields just the new rows.
        total: DimLike = past or seq
        if isinstance(past, Dim):
            summed = _sum_dims([past, seq])
            if isinstance(summed, Dim):
                summed = Dim(f"{summed.name}_present", summed.min_size, summed.max_size)
            total = summed
        present = TensorDescriptor(dtype, (batch, kv_num_heads, total, head))
        out = TensorDescriptor(dtype, query.shape)
        do_rotary = cos_cache is not None
        if do_rotary != (sin_cache is not None):
            raise GraphError(f"{op}: pass both cos_cache and sin_cache, or neither")
        if cos_cache is not None and sin_cache is not None:
            self._same_dtype(op, query, cos_cache, sin_cache)
            half = cos_cache.shape[1] if cos_cache.rank == 2 else None
            if (
                head % 16
                or tuple(cos_cache.shape) != tuple(sin_cache.shape)
                or not isinstance(half, int)
                or half % 8
                or not 0 < half <= head // 2
            ):
                raise GraphError(
                    f"{op}: rotary needs head size % 16 == 0 (got {head}) and cos/sin caches "
                    f"[max_total, rotary_dim / 2] with rotary_dim / 2 a multiple of 8 and at "
                    f"most {head // 2}; got {list(cos_cache.shape)} and {list(sin_cache.shape)}"
                )
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

        ``data`` is uint8 ``[rows, k * bits / 8]``: ``bits`` (2, 4 or 8) per element,
        element j at bit offset ``j * bits`` of its row, least significant first.
        ``scales`` is ``dtype[rows, ceil(k / block_size)]`` (``dtype`` float32 or
        float16; ``block_size`` a power of two >= 16; ``k`` need not be a multiple of
        it). ``zero_points`` is uint8 ``[rows, ceil(n_blocks * bits / 8)]``, packed like
        ``data``; without it every zero point is ``2 ** (bits - 1)``. Row ``r`` dequantizes
        to ``(q - zero_point) * scale``. Indices (int32 or int64, any shape) may be
        negative (from the end); onnxruntime returns zeros for out-of-range indices
        instead of failing. Output: ``indices.shape + [k]`` of ``dtype``.
        """
        op = "gather_block_quantized"
        self._check_operands(op, data, indices, scales, zero_points)
        self._check_dtype(op, indices, ("int64", "int32"), "indices")
        if dtype not in FLOATS:
            raise GraphError(f"{op}: dtype must be one of {', '.join(FLOATS)}, got {dtype!r}")
        if bits not in (2, 4, 8):
            raise GraphError(f"{op}: bits must be 2, 4 or 8, got {bits}")
        if block_size < 16 or block_size & (block_size - 1):
            raise GraphError(f"{op}: block_size must be a power of two >= 16, got {block_size}")
        if k <= 0 or (k * bits) % 8:
            raise GraphError(f"{op}: k={k} {bits}-bit values do not fill whole bytes")
        if data.dtype != "uint8" or data.rank != 2 or data.shape[1] != k * bits // 8:
            raise GraphError(
                f"{op}: data must be uint8[rows, {k * bits // 8}], got {data.descriptor}"
            )
        rows = data.shape[0]
        n_blocks = -(-k // block_size)
        if scales.dtype != dtype or tuple(scales.shape) != (rows, n_blocks):
            raise GraphError(
                f"{op}: scales must be {dtype}[{rows}, {n_blocks}], got {scales.descriptor}"
            )
        zp_width = -(-n_blocks * bits // 8)
        if zero_points is not None and (
            zero_points.dtype != "uint8" or tuple(zero_points.shape) != (rows, zp_width)
        ):
            raise GraphError(
                f"{op}: zero_points must be uint8[{rows}, {zp_width}], got {zero_points.descriptor}"
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
