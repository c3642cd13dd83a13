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
# What the loaders need for matrices and lookups (float32), per plain type.
MATRIX_VIEWS = {"F32"}
MATRIX_DEQUANT = {"F16", "BF16", "F64"}
MATRIX_REFUSED = {"I8", "I16", "I32", "I64"}
DENSE_VIEWS = {"F32", "F16", "I8", "I32", "I64"}


@pytest.mark.parametrize("qtype", list(T), ids=lambda t: t.name)
def test_every_ggml_type_has_a_layout_or_a_clear_error(qtype: GGMLQuantizationType) -> None:
    shape = (4, 256)
    for role in ("matmul", "embedding", "dense"):
        refused = qtype.name in UNSUPPORTED or (role != "dense" and qtype.name in MATRIX_REFUSED)
        if refused:
            with pytest.raises(UnsupportedError, match=qtype.name):
                choose_transform(qtype, shape, role)
            continue
        t = choose_transform(qtype, shape, role)
        views = DENSE_VIEWS if role == "dense" else MATRIX_VIEWS
        if qtype.name in views:
            assert t is None
            assert raw_dtype(qtype) is not None
        elif qtype in FORMATS and role != "dense":
            assert isinstance(t, MatMulNBitsTransform)
        else:
            assert isinstance(t, DequantizeTransform)
            assert t.outputs["data"].dtype == "float32"
        if role != "dense" and qtype.name in MATRIX_DEQUANT:
            assert isinstance(t, DequantizeTransform)


def test_plain_type_table_covers_every_unblocked_type() -> None:
    from gguf import GGML_QUANT_SIZES

    from pullweights.gguf.plain import PLAIN_TYPES

    unblocked = {t for t in T if GGML_QUANT_SIZES[t][0] == 1}
    assert set(PLAIN_TYPES) == unblocked
    for t, plain in PLAIN_TYPES.items():
        assert plain.numpy.itemsize == GGML_QUANT_SIZES[t][1]
        assert raw_dtype(t) == plain.view


def test_roles_and_ranks() -> None:
    assert isinstance(choose_transform(T.Q4_K, (4, 256), "matmul"), MatMulNBitsTransform)
    assert isinstance(choose_transform(T.Q4_K, (4, 256), "dense"), DequantizeTransform)
    assert isinstance(choose_transform(T.Q4_K, (2, 4, 256), "matmul"), DequantizeTransform)
    assert choose_transform(T.F16, (4, 256), "dense") is None
    assert isinstance(choose_transform(T.F16, (4, 256), "matmul"), DequantizeTransform)
    assert choose_transform(T.I64, (4, 256), "dense") is None
    assert raw_dtype(T.F16) == "float16" and raw_dtype(T.Q4_0) is None
    with pytest.raises(ValueError, match="role"):
        choose_transform(T.Q4_K, (4, 256), "conv")  # type: ignore[arg-type]


def test_layout_names() -> None:
    assert layout_name(T.Q4_K, "blk.0.ffn_up.weight") == "MatMulNBits 4-bit b32 + mins (exact)"
    assert layout_name(T.Q8_0, "token_embd.weight") == "Gather + unpack 8-bit b32 exact"
    assert (
        layout_name(T.Q8_0, "token_embd.weight", tied_head=True)
        == "MatMulNBits 8-bit b32 exact; Gather + unpack 8-bit b32 exact"
    )
    assert layout_name(T.F16, "token_embd.weight") == "dequant f32"
    assert layout_name(T.F16, "output_norm.weight") == "view f16"
    assert layout_name(T.I64, "positions") == "view i64"
    assert layout_name(T.I64, "blk.0.ffn_up.weight") == "unsupported I64"
    assert layout_name(T.I16, "positions") == "unsupported I16"
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
