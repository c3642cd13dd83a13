"""The layouts on real tensors of the installed gemma3-270m GGUF (Q8_0, Q5_0, Q4_K, Q6_K)."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import quants

from pullweights.gguf import open_gguf
from pullweights.gguf.layouts import (
    MatMulNBitsTransform,
    choose_transform,
    gather_rows,
    tensor_role,
)

NAMES = [
    "token_embd.weight",  # Q8_0, 262144 x 640: only some rows are decoded
    "blk.0.attn_q.weight",  # Q5_0
    "blk.0.attn_v.weight",  # Q8_0
    "blk.0.attn_output.weight",  # Q4_K
    "blk.0.ffn_down.weight",  # Q6_K
]


@pytest.mark.model
async def test_gemma3_tensors_repack_exactly() -> None:
    async with await open_gguf("gemma3-270m") as gguf:
        for name in NAMES:
            tensor = gguf.tensor(name)
            raw = np.frombuffer(await tensor.source.read(tensor.offset, tensor.nbytes), np.uint8)
            t = choose_transform(tensor.ggml_type, tensor.shape, tensor_role(name))
            assert isinstance(t, MatMulNBitsTransform), name
            parts = t.apply(raw)
            rows = raw.reshape(tensor.shape[0], -1)
            if tensor_role(name) == "embedding":
                ids = np.array([0, 2, 1000, 262143])
                got = gather_rows(t, parts, ids)
                np.testing.assert_array_equal(got, quants.dequantize(rows[ids], tensor.ggml_type))
            else:
                ref = quants.dequantize(rows, tensor.ggml_type)
                np.testing.assert_array_equal(t.dequantize(parts), ref, err_msg=name)
