"""Tests of the numpy reference and the tiny-model writers themselves.

Independent checks here: an HF-layout forward pass written in this file (rotate-half RoPE
on the unpermuted weights), gguf-py's dequantizers, and properties that can fail
(causality, GQA as repeated heads, gemma3's sliding window and global layers). The
comparison with llama.cpp is in test_llamacpp.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt
import pytest

from .kquants import quantize_q4_k, quantize_q6_k
from .numpy_llm import ReferenceModel, reference_generate, reference_logits
from .tiny_models import (
    Arch,
    random_hf_weights,
    tiny_config,
    to_gguf_layout,
    vocab_for,
    write_gguf,
    write_tiny_model,
)

ARCHS: tuple[Arch, ...] = ("llama", "qwen2", "gemma3")
F64 = npt.NDArray[np.float64]


def _ids(n: int, seed: int = 0, high: int = 370) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(3, high, n)]


# --- writers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encode", "qtype", "rel_rms"),
    [
        (quantize_q4_k, gguf.GGMLQuantizationType.Q4_K, 0.10),
        (quantize_q6_k, gguf.GGMLQuantizationType.Q6_K, 0.03),
    ],
)
def test_kquant_encoders_round_trip_through_gguf(
    encode: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.uint8]],
    qtype: gguf.GGMLQuantizationType,
    rel_rms: float,
) -> None:
    x = (np.random.default_rng(0).standard_normal((6, 512)) * 0.05).astype(np.float32)
    x[1, :256] = 0.0
    x[2, 256:] += 0.2  # all-positive block: Q4_K's min term must still be exact enough
    y = gguf.quants.dequantize(encode(x), qtype)
    assert y.shape == x.shape
    assert np.all(y[1, :256] == 0.0)
    err = np.sqrt(np.mean((y - x) ** 2, axis=1) / np.mean(x**2 + 1e-12, axis=1))
    assert err.max() < rel_rms, err


def _expected_tensors(arch: str, n_layers: int, tied: bool) -> set[str]:
    per_layer = [
        "attn_norm",
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "ffn_norm",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
    ]
    if arch == "gemma3":
        per_layer += ["attn_q_norm", "attn_k_norm", "post_attention_norm", "post_ffw_norm"]
    names = {f"blk.{i}.{t}.weight" for i in range(n_layers) for t in per_layer}
    if arch == "qwen2":
        names |= {f"blk.{i}.attn_{t}.bias" for i in range(n_layers) for t in "qkv"}
    names |= {"token_embd.weight", "output_norm.weight"}
    return names if tied else names | {"output.weight"}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("quant", [None, "Q8_0", "mixed"])
def test_tiny_model_layout(tmp_path: Path, arch: Arch, quant: str | None) -> None:
    path = write_tiny_model(tmp_path / "m.gguf", arch, quant=quant)
    r = gguf.GGUFReader(path)
    meta = {k: f.contents() for k, f in r.fields.items()}
    a = arch
    assert meta["general.architecture"] == arch
    assert meta["general.name"] == f"tiny-{arch}"
    for key in (
        "context_length",
        "embedding_length",
        "block_count",
        "feed_forward_length",
        "attention.head_count",
        "attention.head_count_kv",
        "attention.layer_norm_rms_epsilon",
        "rope.freq_base",
    ):
        assert f"{a}.{key}" in meta, key
    assert not any(k.startswith(f"{a}.rope.scaling") for k in meta)
    assert (f"{a}.attention.sliding_window" in meta) == (arch == "gemma3")
    assert (f"{a}.attention.key_length" in meta) == (arch == "gemma3")
    hidden = meta[f"{a}.embedding_length"]
    if quant == "mixed":
        assert hidden == 256
    if arch == "gemma3":
        assert meta["gemma3.block_count"] == 6
        assert meta["gemma3.attention.key_length"] * meta["gemma3.attention.head_count"] != hidden
    assert meta[f"{a}.attention.head_count_kv"] < meta[f"{a}.attention.head_count"]
    tensors = {t.name: t for t in r.tensors}
    assert set(tensors) == _expected_tensors(arch, meta[f"{a}.block_count"], arch == "gemma3")
    for name, t in tensors.items():
        one_d = len(t.shape) == 1
        if one_d or quant is None:
            assert t.tensor_type == gguf.GGMLQuantizationType.F32, name
        else:
            assert t.tensor_type != gguf.GGMLQuantizationType.F32, name
    q = tensors["blk.0.attn_q.weight"]
    assert [int(d) for d in q.shape] == [
        hidden,
        meta[f"{a}.attention.head_count"]
        * (meta.get(f"{a}.attention.key_length") or hidden // meta[f"{a}.attention.head_count"]),
    ]
    norm = np.asarray(tensors["blk.0.attn_norm.weight"].data)
    assert 0.5 < float(norm.mean()) < 1.5  # gemma too: the stored value holds the +1


@pytest.mark.parametrize("arch", ARCHS)
def test_tokenizer_section(tmp_path: Path, arch: Arch) -> None:
    r = gguf.GGUFReader(write_tiny_model(tmp_path / "m.gguf", arch))
    meta = {k: f.contents() for k, f in r.fields.items()}
    tokens = meta["tokenizer.ggml.tokens"]
    types = meta["tokenizer.ggml.token_type"]
    embd = next(t for t in r.tensors if t.name == "token_embd.weight")
    assert len(tokens) == len(types) == int(embd.shape[1])
    assert 300 <= len(tokens) <= 450
    if arch == "qwen2":
        assert meta["tokenizer.ggml.model"] == "gpt2"
        assert meta["tokenizer.ggml.pre"] == "qwen2"
        assert meta["tokenizer.ggml.add_bos_token"] is False
        for merge in meta["tokenizer.ggml.merges"]:
            left, right = merge.split(" ")
            assert left + right in tokens and left in tokens and right in tokens
        assert tokens[meta["tokenizer.ggml.eos_token_id"]] == "<|im_end|>"
    else:
        assert meta["tokenizer.ggml.model"] == "llama"
        assert [tokens.index(f"<0x{b:02X}>") for b in (0, 255)] == [
            tokens.index("<0x00>"),
            tokens.index("<0x00>") + 255,
        ]
        assert len(meta["tokenizer.ggml.scores"]) == len(tokens)
        bos, eos = ("<bos>", "<eos>") if arch == "gemma3" else ("<s>", "</s>")
        assert tokens[meta["tokenizer.ggml.bos_token_id"]] == bos
        assert tokens[meta["tokenizer.ggml.eos_token_id"]] == eos
        assert "<unk>" in tokens


def test_llama_optionally_tied_and_overrides(tmp_path: Path) -> None:
    path = write_tiny_model(tmp_path / "t.gguf", "llama", tie_embeddings=True, n_layers=3)
    names = {t.name for t in gguf.GGUFReader(path).tensors}
    assert "output.weight" not in names and "blk.2.ffn_down.weight" in names
    assert reference_logits(path, [1, 5, 9]).shape == (
        3,
        len(vocab_for(tiny_config("llama")).tokens),
    )
    padded = write_tiny_model(tmp_path / "p.gguf", "qwen2", vocab_size=512)
    assert reference_logits(padded, [3, 500]).shape == (2, 512)
    with pytest.raises(ValueError, match="unsupported quant"):
        write_tiny_model(tmp_path / "x.gguf", "llama", quant="Q2_K")
    with pytest.raises(TypeError):
        write_tiny_model(tmp_path / "x.gguf", "llama", hiden=3)
    with pytest.raises(ValueError):
        write_tiny_model(tmp_path / "x.gguf", "llama", quant="Q4_0", hidden=48, head_dim=12)


# --- reference against an HF-layout forward pass ---------------------------------------


def _hf_llama_forward(
    w: dict[str, npt.NDArray[np.float32]],
    ids: list[int],
    n_head: int,
    n_kv: int,
    eps: float,
    base: float,
) -> F64:
    """HF ``modeling_llama`` on unpermuted weights, written independently of common.py."""

    def norm(x: F64, g: npt.NDArray[np.float32]) -> F64:
        return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * g

    def rotate_half(x: F64) -> F64:
        half = x.shape[-1] // 2
        return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)

    x = w["token_embd.weight"][ids].astype(np.float64)
    seq, d = len(ids), w["blk.0.attn_q.weight"].shape[0] // n_head
    inv = 1.0 / base ** (np.arange(0, d, 2) / d)
    emb = np.concatenate([np.outer(np.arange(seq), inv)] * 2, axis=-1)  # (seq, d)
    cos, sin = np.cos(emb)[:, None, :], np.sin(emb)[:, None, :]
    n_layers = sum(1 for k in w if k.endswith("attn_q.weight"))
    for i in range(n_layers):
        p = f"blk.{i}."
        h = norm(x, w[p + "attn_norm.weight"])
        q = (h @ w[p + "attn_q.weight"].T).reshape(seq, n_head, d)
        k = (h @ w[p + "attn_k.weight"].T).reshape(seq, n_kv, d)
        v = (h @ w[p + "attn_v.weight"].T).reshape(seq, n_kv, d)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = np.repeat(k, n_head // n_kv, 1), np.repeat(v, n_head // n_kv, 1)
        s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(d)
        s = s + np.triu(np.full((seq, seq), -np.inf), 1)
        pr = np.exp(s - s.max(-1, keepdims=True))
        pr /= pr.sum(-1, keepdims=True)
        x = x + np.einsum("hqk,khd->qhd", pr, v).reshape(seq, -1) @ w[p + "attn_output.weight"].T
        h = norm(x, w[p + "ffn_norm.weight"])
        g, u = h @ w[p + "ffn_gate.weight"].T, h @ w[p + "ffn_up.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ w[p + "ffn_down.weight"].T
    return norm(x, w["output_norm.weight"]) @ w["output.weight"].T


def test_llama_permuted_interleaved_equals_hf_rotate_half(tmp_path: Path) -> None:
    cfg = tiny_config("llama")
    hf = random_hf_weights(cfg, len(vocab_for(cfg).tokens), seed=3)
    path = write_gguf(tmp_path / "l.gguf", cfg, to_gguf_layout(cfg, hf), vocab_for(cfg))
    ids = _ids(12)
    expected = _hf_llama_forward(hf, ids, cfg.n_heads, cfg.n_kv_heads, cfg.rms_eps, cfg.rope_base)
    np.testing.assert_allclose(reference_logits(path, ids), expected, atol=2e-5, rtol=0)
    # Teeth: the unpermuted file under the same (interleaved) reference must differ.
    raw = write_gguf(tmp_path / "raw.gguf", cfg, hf, vocab_for(cfg))
    assert np.abs(reference_logits(raw, ids) - expected).max() > 1e-2


# --- internal properties ---------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_causal(tmp_path: Path, arch: Arch) -> None:
    m = ReferenceModel(write_tiny_model(tmp_path / "m.gguf", arch, seed=1))
    a = _ids(20, seed=1)
    b = a[:10] + _ids(10, seed=2)
    la, lb = m.logits(a), m.logits(b)
    np.testing.assert_allclose(la[:10], lb[:10], atol=1e-6, rtol=0)
    assert np.abs(la[10:] - lb[10:]).max(axis=-1).min() > 1e-3


def _repeat_kv_heads(
    w: dict[str, npt.NDArray[np.float32]], n_kv: int, group: int
) -> dict[str, npt.NDArray[np.float32]]:
    out = dict(w)
    for name, value in w.items():
        if any(name.endswith(f"attn_{t}.{s}") for t in "kv" for s in ("weight", "bias")):
            heads = value.reshape(n_kv, -1, *value.shape[1:])
            out[name] = np.repeat(heads, group, axis=0).reshape(-1, *value.shape[1:])
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_gqa_equals_repeated_heads(tmp_path: Path, arch: Arch) -> None:
    cfg = tiny_config(arch)
    vocab = vocab_for(cfg)
    hf = random_hf_weights(cfg, len(vocab.tokens), seed=4)
    gqa = write_gguf(tmp_path / "gqa.gguf", cfg, to_gguf_layout(cfg, hf), vocab)
    mha_cfg = replace(cfg, n_kv_heads=cfg.n_heads)
    group = cfg.n_heads // cfg.n_kv_heads
    mha_w = to_gguf_layout(mha_cfg, _repeat_kv_heads(hf, cfg.n_kv_heads, group))
    mha = write_gguf(tmp_path / "mha.gguf", mha_cfg, mha_w, vocab)
    ids = _ids(14, seed=4)
    np.testing.assert_allclose(
        reference_logits(gqa, ids), reference_logits(mha, ids), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("arch", ["gemma3", "llama"])
def test_sliding_window_only_matters_beyond_the_window(tmp_path: Path, arch: Arch) -> None:
    """gemma3's sliding layers; llama with ``attention.sliding_window`` (Mistral): all."""
    cfg = tiny_config(arch, sliding_window=8)
    vocab = vocab_for(cfg)
    w = to_gguf_layout(cfg, random_hf_weights(cfg, len(vocab.tokens), seed=5))
    windowed = ReferenceModel(write_gguf(tmp_path / "w.gguf", cfg, w, vocab))
    full_cfg = replace(cfg, sliding_window=cfg.context_length)
    full = ReferenceModel(write_gguf(tmp_path / "f.gguf", full_cfg, w, vocab))
    window = cfg.sliding_window
    assert window == 8
    ids = _ids(20, seed=5)
    lw, lf = windowed.logits(ids), full.logits(ids)
    np.testing.assert_allclose(lw[:window], lf[:window], atol=1e-6, rtol=0)
    assert np.abs(lw[window:] - lf[window:]).max(axis=-1).min() > 1e-3


def test_gemma3_every_sixth_layer_is_global(tmp_path: Path) -> None:
    m = ReferenceModel(write_tiny_model(tmp_path / "g.gguf", "gemma3", seed=6))
    a = _ids(48, seed=6)
    b = [(a[0] + 1) % 300, *a[1:]]
    ha, hb = m.hidden_states(a), m.hidden_states(b)
    assert len(ha) == 7
    # Sliding layers 0..4 carry token 0 at most 5 * (8 - 1) = 35 positions forward.
    reach = 5 * 7
    for layer in range(5):
        r = (layer + 1) * 7
        np.testing.assert_allclose(ha[layer + 1][r + 1 :], hb[layer + 1][r + 1 :], atol=1e-6)
        assert np.abs(ha[layer + 1][r] - hb[layer + 1][r]).max() > 1e-6
    assert np.abs(ha[6][reach + 1 :] - hb[6][reach + 1 :]).max(axis=-1).min() > 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_generate_is_argmax_and_hidden_states_feed_the_head(tmp_path: Path, arch: Arch) -> None:
    path = write_tiny_model(tmp_path / "m.gguf", arch)
    prompt = _ids(6, seed=7)
    out = reference_generate(path, prompt, 4)
    logits = reference_logits(path, prompt + out)
    assert list(logits.argmax(-1)[len(prompt) - 1 : -1]) == out
    m = ReferenceModel(path)
    hs = m.hidden_states(prompt)
    w = m.model.tensors
    eps = float(m.model.require("attention.layer_norm_rms_epsilon"))
    x = hs[-1][-1].astype(np.float64)
    x = x / np.sqrt((x**2).mean() + eps) * w["output_norm.weight"]
    head = w.get("output.weight", w["token_embd.weight"])
    np.testing.assert_allclose(x @ head.T.astype(np.float64), logits[len(prompt) - 1], atol=1e-4)
