"""Layout choice per type and role, and the names `pullweights inspect` shows."""

from __future__ import annotations

import pytest
from gguf import GGMLQuantizationType

from pullweights.errors import UnsupportedError
from pullweights.gguf.layouts import (
    FORMATS,
    DequantizeTransform,
    MatMulNBitsTransform,
    choose_transform,
    layout_name,
    raw_dtype,
    tensor_role,
)

T = GGMLQuantizationType
UNSUPPORTED = {"Q8_1", "Q8_K", "Q1_0", "I16"}


@pytest.mark.parametrize("qtype", list(T), ids=lambda t: t.name)
def test_every_ggml_type_has_a_layout_or_a_clear_error(qtype: GGMLQuantizationType) -> None:
    shape = (4, 256)
    for role in ("matmul", "embedding", "dense"):
        if qtype.name in UNSUPPORTED:
            with pytest.raises(UnsupportedError, match=qtype.name):
                choose_transform(qtype, shape, role)
            continue
        t = choose_transform(qtype, shape, role)
        if raw_dtype(qtype) is not None:
            assert t is None
        elif qtype in FORMATS and role != "dense":
            assert isinstance(t, MatMulNBitsTransform)
        else:
            assert isinstance(t, DequantizeTransform)


def test_roles_and_ranks() -> None:
    assert isinstance(choose_transform(T.Q4_K, (4, 256), "matmul"), MatMulNBitsTransform)
    assert isinstance(choose_transform(T.Q4_K, (4, 256), "dense"), DequantizeTransform)
    assert isinstance(choose_transform(T.Q4_K, (2, 4, 256), "matmul"), DequantizeTransform)
    assert choose_transform(T.F16, (4, 256), "matmul") is None
    assert raw_dtype(T.F16) == "float16" and raw_dtype(T.Q4_0) is None
    with pytest.raises(ValueError, match="role"):
        choose_transform(T.Q4_K, (4, 256), "conv")  # type: ignore[arg-type]


def test_layout_names() -> None:
    assert layout_name(T.Q4_K, "blk.0.ffn_up.weight") == "MatMulNBits 4-bit b32 + mins (exact)"
    assert layout_name(T.Q8_0, "token_embd.weight") == "GatherBlockQuantized 8-bit b32 exact"
    assert layout_name(T.Q6_K, "output.weight") == "MatMulNBits 8-bit b16 exact"
    assert layout_name(T.Q3_K, "blk.1.attn_q.weight") == "MatMulNBits 4-bit b16 exact"
    assert layout_name(T.F32, "output_norm.weight") == "view f32"
    assert layout_name(T.Q8_0, "blk.0.attn_q.bias") == "dequant f32"
    assert layout_name(T.BF16, "blk.0.ffn_up.weight") == "dequant f32 (from bf16)"
    assert layout_name(T.Q4_K, "blk.0.ffn_up_exps.weight", (8, 4, 256)) == "dequant f32"
    assert layout_name(T.Q8_K, "blk.0.ffn_up.weight") == "unsupported Q8_K"
    for qtype in FORMATS:  # names agree with the transforms' own description
        t = MatMulNBitsTransform(qtype, (1, FORMATS[qtype].block_elems))
        assert layout_name(qtype, "blk.0.attn_v.weight") == t.describe()


def test_tensor_roles() -> None:
    assert tensor_role("token_embd.weight") == "embedding"
    assert tensor_role("per_layer_token_embd.weight") == "embedding"
    assert tensor_role("output.weight") == "matmul"
    assert tensor_role("blk.3.attn_k.weight") == "matmul"
    assert tensor_role("blk.3.attn_k_norm.weight") == "dense"
    assert tensor_role("blk.3.attn_k.bias") == "dense"
    assert tensor_role("rope_freqs.weight") == "dense"
