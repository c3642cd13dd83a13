"""Writers of tiny random-weight GGUF models (llama, qwen2, gemma3), laid out as
llama.cpp's ``convert_hf_to_gguf.py`` lays out those architectures.

Random weights are drawn in the HF layout, then converted as the converter does:
llama's ``attn_q``/``attn_k`` rows are permuted per head for interleaved RoPE (qwen2 and
gemma3 are not permuted), and gemma norms are stored as HF ``w + 1`` (so the stored value
is what multiplies the normalised activations; the generated stored values sit around 1).

llama variants: a Mistral-style sliding window (``sliding_window``), linear RoPE scaling
(``rope_linear_factor``) and Llama 3.1's RoPE scaling (``llama3_rope``), which the converter
stores as a ``rope_freqs.weight`` tensor of per-pair frequency divisors.

Example::

    path = write_tiny_model(tmp_path / "g.gguf", "gemma3", quant="Q8_0", n_layers=6)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal

import gguf
import numpy as np
import numpy.typing as npt
from gguf import GGMLQuantizationType as QT

from .kquants import quantize_q4_k, quantize_q6_k
from .tiny_vocab import Vocab, gemma3_vocab, llama_vocab, qwen2_vocab

Arch = Literal["llama", "qwen2", "gemma3"]
F32 = npt.NDArray[np.float32]

K_QUANTS = {"Q4_K", "Q6_K"}
# One file mixing the types real Q4_K_M files use, role -> type (Q4_1/Q5_1 left out: ggml
# folds their min term with an f16-rounded activation sum, see numerics.py).
MIXED_QUANT = {
    "token_embd": "Q8_0",
    "output": "Q6_K",
    "attn_q": "Q5_0",
    "attn_k": "Q4_0",
    "attn_v": "Q8_0",
    "attn_output": "Q4_K",
    "ffn_gate": "Q4_K",
    "ffn_up": "Q5_0",
    "ffn_down": "Q6_K",
}
FILE_TYPES = {
    None: gguf.LlamaFileType.ALL_F32,
    "F16": gguf.LlamaFileType.MOSTLY_F16,
    "BF16": gguf.LlamaFileType.MOSTLY_BF16,
    "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
    "Q4_1": gguf.LlamaFileType.MOSTLY_Q4_1,
    "Q5_0": gguf.LlamaFileType.MOSTLY_Q5_0,
    "Q5_1": gguf.LlamaFileType.MOSTLY_Q5_1,
    "Q4_K": gguf.LlamaFileType.MOSTLY_Q4_K_M,
    "Q6_K": gguf.LlamaFileType.MOSTLY_Q6_K,
    "mixed": gguf.LlamaFileType.MOSTLY_Q4_K_M,
}


@dataclass(frozen=True)
class Llama3Rope:
    """Llama 3.1's RoPE scaling (HF ``rope_type: "llama3"``), as in an HF ``config.json``."""

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_context: int = 64  # HF original_max_position_embeddings (8192 in the releases)

    def hf_parameters(self, rope_base: float) -> dict[str, object]:
        """The HF ``rope_parameters`` (``rope_scaling``) dict of this scaling."""
        return {
            "rope_type": "llama3",
            "rope_theta": rope_base,
            "factor": self.factor,
            "low_freq_factor": self.low_freq_factor,
            "high_freq_factor": self.high_freq_factor,
            "original_max_position_embeddings": self.original_context,
        }


def llama3_rope_freqs(head_dim: int, rope_base: float, rope: Llama3Rope) -> F32:
    """``rope_freqs.weight`` as the converter computes it (``LlamaModel.generate_extra_tensors``):
    per rotated pair, 1 for short wavelengths, ``factor`` for long ones, smoothed between."""
    freqs = 1.0 / (rope_base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    low_wavelen = rope.original_context / rope.low_freq_factor
    high_wavelen = rope.original_context / rope.high_freq_factor
    factors: list[float] = []
    for freq in freqs:
        wavelen = 2 * math.pi / float(freq)
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(rope.factor)
        else:
            smooth = (rope.original_context / wavelen - rope.low_freq_factor) / (
                rope.high_freq_factor - rope.low_freq_factor
            )
            factors.append(1.0 / ((1.0 - smooth) / rope.factor + smooth))
    return np.asarray(factors, dtype=np.float32)


@dataclass(frozen=True)
class TinyConfig:
    """Shape and hyper-parameters of a tiny model; every field can be overridden."""

    arch: Arch
    hidden: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int = 16
    ffn: int = 128
    context_length: int = 256
    rms_eps: float = 1e-5
    rope_base: float = 10000.0
    sliding_window: int | None = None  # gemma3 (required); llama: every layer (Mistral)
    rope_linear_factor: float | None = None  # llama: rope.scaling.type = linear
    llama3_rope: Llama3Rope | None = None  # llama: rope_freqs.weight (Llama 3.1+)
    tie_embeddings: bool = False
    write_head_dim: bool = False  # write attention.key_length / value_length
    final_logit_softcapping: float | None = None
    vocab_size: int | None = None  # pad the tokenizer with <unusedN> up to this size
    weight_scale: float = 0.8  # matmul weights ~ N(0, (weight_scale / sqrt(fan_in))^2)
    norm_scale: float = 0.1  # stored norm weights ~ 1 + N(0, norm_scale^2)
    name: str = ""


def tiny_config(arch: Arch, *, quant: str | None = None, **overrides: object) -> TinyConfig:
    """Default tiny config of ``arch``; K-quants (and ``"mixed"``) get 256-multiple dims.

    llama/qwen2: hidden 64, 2 layers, 4 heads, 2 KV heads, head_dim 16, ffn 128.
    gemma3: hidden 64, 6 layers (layer 5 is global), head_dim 32 != hidden / heads,
    sliding window 8, tied head. With a K-quant: hidden 256, ffn 512, head_dim 64 (gemma3
    128), so every matmul's input dim is a multiple of 256.
    """
    if quant not in FILE_TYPES:
        raise ValueError(f"unsupported quant {quant!r}; choose from {sorted(map(str, FILE_TYPES))}")
    kquant = quant in K_QUANTS or quant == "mixed"
    base: dict[str, object] = {"name": f"tiny-{arch}"}
    if arch == "gemma3":
        base |= {
            "n_layers": 6,
            "head_dim": 32,
            "rms_eps": 1e-6,
            "rope_base": 1e6,
            "sliding_window": 8,
            "tie_embeddings": True,
            "write_head_dim": True,
        }
    elif arch == "qwen2":
        base |= {"rms_eps": 1e-6, "rope_base": 1e6}
    elif arch != "llama":
        raise ValueError(f"unknown tiny architecture {arch!r}")
    if kquant:
        base |= {"hidden": 256, "ffn": 512, "head_dim": 128 if arch == "gemma3" else 64}
    names = {f.name for f in fields(TinyConfig)}
    unknown = set(overrides) - names
    if unknown:
        raise TypeError(f"unknown TinyConfig fields: {sorted(unknown)}")
    return replace(TinyConfig(arch=arch), **(base | overrides))  # type: ignore[arg-type]


def vocab_for(config: TinyConfig) -> Vocab:
    """The architecture's tiny tokenizer, padded to ``config.vocab_size`` when set."""
    vocab = {"llama": llama_vocab, "qwen2": qwen2_vocab, "gemma3": gemma3_vocab}[config.arch]()
    if config.vocab_size is not None:
        vocab.pad_to(config.vocab_size)
    return vocab


def random_hf_weights(config: TinyConfig, n_vocab: int, seed: int = 0) -> dict[str, F32]:
    """Random weights keyed by GGUF tensor name but in HF layout and conventions.

    HF layout: matmul weights ``(out, in)``, Q/K NOT permuted; gemma norms hold HF's ``w``
    (the stored GGUF value minus 1).
    """
    rng = np.random.default_rng(seed)
    c = config
    gemma = c.arch == "gemma3"

    def mat(n_out: int, n_in: int) -> F32:
        std = c.weight_scale / float(np.sqrt(n_in))
        return (rng.standard_normal((n_out, n_in)) * std).astype(np.float32)

    def norm(n: int) -> F32:
        stored = 1.0 + rng.standard_normal(n) * c.norm_scale
        return (stored - 1.0 if gemma else stored).astype(np.float32)

    q_dim, kv_dim = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    w: dict[str, F32] = {}
    # Unit-ish embeddings for llama/qwen2. Gemma multiplies them by sqrt(hidden) and ties
    # the head: std 8/hidden keeps wide models from mostly predicting the input token.
    embd_std = 8.0 / c.hidden if gemma else 1.0
    w["token_embd.weight"] = (rng.standard_normal((n_vocab, c.hidden)) * embd_std).astype(
        np.float32
    )
    for i in range(c.n_layers):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = norm(c.hidden)
        w[p + "attn_q.weight"] = mat(q_dim, c.hidden)
        w[p + "attn_k.weight"] = mat(kv_dim, c.hidden)
        w[p + "attn_v.weight"] = mat(kv_dim, c.hidden)
        if c.arch == "qwen2":
            for t, n in (("attn_q", q_dim), ("attn_k", kv_dim), ("attn_v", kv_dim)):
                w[p + t + ".bias"] = (rng.standard_normal(n) * 0.1).astype(np.float32)
        if gemma:
            w[p + "attn_q_norm.weight"] = norm(c.head_dim)
            w[p + "attn_k_norm.weight"] = norm(c.head_dim)
            w[p + "post_attention_norm.weight"] = norm(c.hidden)
            w[p + "post_ffw_norm.weight"] = norm(c.hidden)
        w[p + "attn_output.weight"] = mat(c.hidden, q_dim)
        w[p + "ffn_norm.weight"] = norm(c.hidden)
        w[p + "ffn_gate.weight"] = mat(c.ffn, c.hidden)
        w[p + "ffn_up.weight"] = mat(c.ffn, c.hidden)
        w[p + "ffn_down.weight"] = mat(c.hidden, c.ffn)
    w["output_norm.weight"] = norm(c.hidden)
    if gemma:  # a larger final norm widens the tied head's logits (std ~1)
        w["output_norm.weight"] += np.float32(1.0)
    if not c.tie_embeddings:
        w["output.weight"] = mat(n_vocab, c.hidden)
    return w


def derived_tensors(config: TinyConfig) -> dict[str, F32]:
    """Tensors the converter computes from the HF config rather than the checkpoint."""
    if config.llama3_rope is None:
        return {}
    if config.arch != "llama":
        raise ValueError(f"llama3_rope is a llama option, not {config.arch}")
    return {
        "rope_freqs.weight": llama3_rope_freqs(
            config.head_dim, config.rope_base, config.llama3_rope
        )
    }


def permute_qk(weight: F32, n_head: int) -> F32:
    """llama.cpp converter's ``LlamaModel.permute``: per head, rows ``(2, d/2)`` -> ``(d/2, 2)``.

    Row ``j * d/2 + i`` of a head moves to ``2 * i + j``, turning HF's rotate-half pairs
    ``(i, i + d/2)`` into interleaved pairs ``(2i, 2i + 1)``.
    """
    return (
        weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def to_gguf_layout(config: TinyConfig, hf: dict[str, F32]) -> dict[str, F32]:
    """Apply the converter's transforms: llama Q/K permute, gemma norm ``+ 1``."""
    out: dict[str, F32] = {}
    for name, value in hf.items():
        if config.arch == "llama" and name.endswith("attn_q.weight"):
            value = permute_qk(value, config.n_heads)
        elif config.arch == "llama" and name.endswith("attn_k.weight"):
            value = permute_qk(value, config.n_kv_heads)
        elif config.arch == "gemma3" and name.endswith("norm.weight"):
            value = (value + np.float32(1.0)).astype(np.float32)
        out[name] = value
    return out


def _tensor_quant(name: str, quant: str | None, embd_quant: str | None) -> str | None:
    """GGML type of tensor ``name``: None (F32) for norms, biases and 1-D tensors."""
    role = name.removeprefix("blk.").split(".")[-2] if "." in name else name
    if name.startswith("token_embd"):
        return MIXED_QUANT["token_embd"] if embd_quant == "mixed" else embd_quant
    if role.endswith("norm") or name.endswith(".bias"):
        return None
    return MIXED_QUANT[role] if quant == "mixed" else quant


def encode_tensor(name: str, value: F32, qtype: str | None) -> tuple[np.ndarray, QT | None]:
    """Bytes (or float array) for ``value`` in ``qtype`` and the raw GGML type to declare."""
    if qtype is None:
        return value.astype(np.float32), None
    t = QT[qtype]
    if qtype == "Q4_K":
        return quantize_q4_k(value), t
    if qtype == "Q6_K":
        return quantize_q6_k(value), t
    try:
        data = gguf.quants.quantize(value, t)
    except (gguf.quants.QuantError, NotImplementedError) as exc:
        raise ValueError(f"cannot quantize {name} {value.shape} to {qtype}: {exc}") from exc
    return data, (None if qtype == "F16" else t)


def write_gguf(
    path: str | Path,
    config: TinyConfig,
    weights: dict[str, F32],
    vocab: Vocab,
    *,
    quant: str | None = None,
    embd_quant: str | None = None,
) -> Path:
    """Write ``weights`` (GGUF names, GGUF layout) with ``config``'s metadata and ``vocab``."""
    path = Path(path)
    c = config
    w = gguf.GGUFWriter(path, c.arch)
    w.add_type("model")
    w.add_name(c.name or f"tiny-{c.arch}")
    w.add_context_length(c.context_length)
    w.add_embedding_length(c.hidden)
    w.add_block_count(c.n_layers)
    w.add_feed_forward_length(c.ffn)
    w.add_head_count(c.n_heads)
    w.add_head_count_kv(c.n_kv_heads)
    w.add_layer_norm_rms_eps(c.rms_eps)
    w.add_rope_freq_base(c.rope_base)
    if c.arch == "llama":
        w.add_vocab_size(len(vocab.tokens))
        w.add_rope_dimension_count(c.head_dim)
    if c.write_head_dim:
        w.add_key_length(c.head_dim)
        w.add_value_length(c.head_dim)
    if c.arch == "gemma3" and c.sliding_window is None:
        raise ValueError("gemma3 needs a sliding_window")
    if c.sliding_window is not None:
        w.add_sliding_window(c.sliding_window)
    if c.rope_linear_factor is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(c.rope_linear_factor)
    if c.final_logit_softcapping is not None:
        w.add_final_logit_softcapping(c.final_logit_softcapping)
    w.add_file_type(FILE_TYPES[quant])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_vocab(w, vocab)
    for name, value in weights.items():
        qtype = None if value.ndim == 1 else _tensor_quant(name, quant, embd_quant)
        data, raw = encode_tensor(name, value, qtype)
        w.add_tensor(name, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _add_vocab(w: gguf.GGUFWriter, vocab: Vocab) -> None:
    w.add_tokenizer_model(vocab.model)
    if vocab.pre is not None:
        w.add_tokenizer_pre(vocab.pre)
    w.add_token_list(vocab.tokens)
    if vocab.scores is not None:
        w.add_token_scores(vocab.scores)
    w.add_token_types(vocab.types)
    if vocab.merges is not None:
        w.add_token_merges(vocab.merges)
    adders = {
        "bos": w.add_bos_token_id,
        "eos": w.add_eos_token_id,
        "unk": w.add_unk_token_id,
        "pad": w.add_pad_token_id,
    }
    for key, token_id in vocab.special_ids.items():
        adders[key](token_id)
    w.add_add_bos_token(vocab.add_bos)
    w.add_add_eos_token(vocab.add_eos)
    if vocab.add_space_prefix is not None:
        w.add_add_space_prefix(vocab.add_space_prefix)
    if vocab.chat_template is not None:
        w.add_chat_template(vocab.chat_template)


def write_tiny_model(
    path: str | Path,
    arch: Arch,
    *,
    seed: int = 0,
    quant: str | None = None,
    embd_quant: str | None = "same",
    name_order: bool = False,
    **overrides: object,
) -> Path:
    """Write a tiny random-weight GGUF model of ``arch`` to ``path`` and return the path.

    Args:
        path: file to create (overwritten).
        arch: ``"llama"``, ``"qwen2"`` or ``"gemma3"``.
        seed: seed of the random weights (same seed and config -> same file).
        quant: GGML type of the 2-D matmul weights (``"F16"``, ``"BF16"``, ``"Q8_0"``,
            ``"Q4_0"``, ``"Q4_1"``, ``"Q5_0"``, ``"Q5_1"``, ``"Q4_K"``, ``"Q6_K"``), or
            ``"mixed"`` for a per-role mix of all of them (see ``MIXED_QUANT``); None = F32.
            Norms and biases stay F32.
        embd_quant: type of ``token_embd.weight``; ``"same"`` (default) follows ``quant``.
        name_order: write the tensors sorted by name, as some converters do (a block's
            Q, K and V are then not back to back); default: block order.
        **overrides: ``TinyConfig`` fields (``n_layers=4``, ``tie_embeddings=True``,
            ``sliding_window=8``, ``llama3_rope=Llama3Rope()``, ...).

    Raises:
        ValueError: a dimension is not a multiple of the quant type's block size.
        TypeError: an override that is not a ``TinyConfig`` field.
    """
    config = tiny_config(arch, quant=quant, **overrides)
    vocab = vocab_for(config)
    hf = random_hf_weights(config, len(vocab.tokens), seed)
    weights = to_gguf_layout(config, hf) | derived_tensors(config)
    if name_order:
        weights = dict(sorted(weights.items()))
    embd = quant if embd_quant == "same" else embd_quant
    return write_gguf(path, config, weights, vocab, quant=quant, embd_quant=embd)
