"""Tiny random GGUF models of every architecture through pullweights vs the numpy reference.

The reference (``tests/reference``) reads the file with gguf-py, dequantizes with
``gguf.quants`` and runs a float64 forward pass without a KV cache. pullweights runs the
same file through its layouts, ``MatMulNBits`` and ``GroupQueryAttention`` with a KV cache.

Tolerances (max |logit difference|, logits of magnitude ~1-30):

* ``accuracy_level=0`` (exact float activations), F32 and every quantized layout:
  ``1e-5 * max |logit|`` (at least ``1e-4``) — the layouts reproduce ``gguf.quants`` bit
  for bit, so only float32 rounding differs (measured 1e-6 .. 1.2e-4);
* ``accuracy_level=4`` (int8 activations, the default for speed): ``0.5``, and the same
  top token at >= 90% of positions — activations are quantized to 8 bits per block of 32
  (measured on the 6-layer gemma3 Q8_0: max 0.28, typical 0.03).

Prompts are 20 tokens: longer than gemma3's tiny sliding window (8), so sliding and global
layers differ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loaders import (
    GenerationStats,
    LanguageModel,
    SamplingParams,
    generate,
    generate_tokens,
    load_model,
)
from pullweights.errors import ComputeError
from pullweights.runtime.context import create_context
from tests.reference import ReferenceModel, tiny_config, write_tiny_model
from tests.reference.tiny_models import random_hf_weights, to_gguf_layout, vocab_for, write_gguf

EXACT = 1e-5
INT8_ACTIVATIONS = 0.5
PROMPT_LENGTH = 20

# "mixed" is one file with Q8_0, Q6_K, Q5_0, Q4_0, Q4_K, Q4_1 and Q5_1 tensors.
CASES = [
    ("gemma3", None),
    ("gemma3", "Q8_0"),
    ("gemma3", "Q4_K"),
    ("gemma3", "F16"),
    ("llama", None),
    ("llama", "Q4_K"),
    ("llama", "mixed"),
    ("qwen2", None),
    ("qwen2", "Q8_0"),
    ("qwen2", "BF16"),
]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str | None], Path]:
    """Every tiny model of :data:`CASES`, written once for the module."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        (arch, quant): write_tiny_model(
            root / f"{arch}-{quant or 'F32'}.gguf",
            arch,  # type: ignore[arg-type]
            quant=quant,
        )
        for arch, quant in CASES
    }


@pytest.fixture(scope="module")
def references(
    models: dict[tuple[str, str | None], Path],
) -> dict[tuple[str, str | None], ReferenceModel]:
    return {case: ReferenceModel(path) for case, path in models.items()}


def assert_exact(got: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to float32 rounding: ``EXACT`` relative to the largest logit."""
    tolerance = EXACT * max(10.0, float(np.abs(expected).max()))
    assert np.abs(got - expected).max() < tolerance


def prompt_ids(vocab_size: int, n: int = PROMPT_LENGTH, seed: int = 0) -> list[int]:
    return [int(i) for i in np.random.default_rng(seed).integers(0, vocab_size, n)]


async def load(path: Path, tmp_path: Path, **kw: object) -> LanguageModel:
    context = create_context(cache_dir=tmp_path / "cache")
    kw.setdefault("accuracy_level", 0)
    kw.setdefault("context_length", 64)
    return await load_model(str(path), context=context, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("arch", "quant"), CASES, ids=[f"{a}-{q or 'F32'}" for a, q in CASES])
async def test_logits_match_reference(
    arch: str,
    quant: str | None,
    models: dict[tuple[str, str | None], Path],
    references: dict[tuple[str, str | None], ReferenceModel],
    tmp_path: Path,
) -> None:
    model = await load(models[arch, quant], tmp_path)
    ref = references[arch, quant]
    ids = prompt_ids(ref.vocab_size)
    expected = ref.logits(ids)
    full = await model.forward(ids, all_logits=True)
    assert full.shape == expected.shape
    assert_exact(full, expected)

    # Prefill a part, then decode token by token: each step equals the full pass.
    model.reset()
    first = await model.forward(ids[:7])
    assert first.shape == (1, ref.vocab_size)
    steps = [first[0]]
    for token in ids[7:]:
        steps.append((await model.forward([token]))[0])
    assert_exact(np.stack(steps), full[6:])


async def test_int8_activations_stay_close(
    models: dict[tuple[str, str | None], Path],
    references: dict[tuple[str, str | None], ReferenceModel],
    tmp_path: Path,
) -> None:
    case = ("gemma3", "Q8_0")
    model = await load(models[case], tmp_path, accuracy_level=4)
    ids = prompt_ids(references[case].vocab_size)
    expected = references[case].logits(ids)
    got = await model.forward(ids, all_logits=True)
    assert np.abs(got - expected).max() < INT8_ACTIVATIONS
    agree = np.mean(got.argmax(axis=1) == expected.argmax(axis=1))
    assert agree >= 0.9


async def test_greedy_generation_matches_reference(
    models: dict[tuple[str, str | None], Path],
    references: dict[tuple[str, str | None], ReferenceModel],
    tmp_path: Path,
) -> None:
    case = ("qwen2", "Q8_0")
    model = await load(models[case], tmp_path)
    ids = prompt_ids(references[case].vocab_size, 6, seed=3)
    expected = references[case].generate(ids, 8, stop=model.tokenizer.is_eog)
    if model.tokenizer.is_eog(expected[-1]):
        expected = expected[:-1]
    got = [t async for t in generate_tokens(model, ids, SamplingParams(max_tokens=8))]
    assert got == expected


async def test_seeded_sampling_repeats(
    models: dict[tuple[str, str | None], Path], tmp_path: Path
) -> None:
    model = await load(models["llama", None], tmp_path)
    ids = prompt_ids(model.config.vocab_size, 5, seed=1)
    params = SamplingParams(temperature=1.5, top_k=20, seed=7, max_tokens=10)

    async def run() -> list[int]:
        return [t async for t in generate_tokens(model, ids, params)]

    first, second = await run(), await run()
    assert first == second
    greedy = [t async for t in generate_tokens(model, ids, SamplingParams(max_tokens=10))]
    assert first != greedy  # temperature 1.5 over 20 candidates does not follow argmax


async def test_text_and_chat_generation(
    models: dict[tuple[str, str | None], Path], tmp_path: Path
) -> None:
    model = await load(models["qwen2", None], tmp_path)
    stats = GenerationStats()
    params = SamplingParams(max_tokens=5)
    text = "".join([t async for t in generate(model, "Hello world", params, stats=stats)])
    assert stats.prompt_tokens > 0
    assert 0 < stats.generated_tokens <= 5
    assert stats.stop_reason in ("eog", "max_tokens")
    assert isinstance(text, str)
    chat = GenerationStats()
    async for _ in generate(model, "Hello", params, chat=True, stats=chat):
        pass
    # The ChatML template wraps the message in <|im_start|>user ... <|im_start|>assistant.
    assert chat.prompt_tokens > stats.prompt_tokens


async def test_empty_prompt_is_an_error(
    models: dict[tuple[str, str | None], Path], tmp_path: Path
) -> None:
    model = await load(models["llama", None], tmp_path)
    with pytest.raises(ComputeError, match="empty"):
        await model.forward([])
    with pytest.raises(ComputeError, match="empty"):
        async for _ in generate(model, [], SamplingParams(max_tokens=2)):
            pass


async def test_prompt_longer_than_context_is_an_error(
    models: dict[tuple[str, str | None], Path], tmp_path: Path
) -> None:
    model = await load(models["llama", None], tmp_path, context_length=16)
    with pytest.raises(ComputeError, match="context holds 16"):
        await model.forward(prompt_ids(model.config.vocab_size, 17))
    with pytest.raises(ComputeError, match="context holds 16"):
        async for _ in generate_tokens(model, prompt_ids(model.config.vocab_size, 17)):
            pass
    # The cache is unchanged by the refused step: 16 tokens still fit.
    assert model.position == 0
    assert (await model.forward(prompt_ids(model.config.vocab_size, 16))).shape[0] == 1
    with pytest.raises(ComputeError, match="need 17 positions"):
        await model.forward([1])


async def test_generation_stops_at_full_context(
    models: dict[tuple[str, str | None], Path], tmp_path: Path
) -> None:
    model = await load(models["llama", None], tmp_path, context_length=12)
    stats = GenerationStats()
    ids = prompt_ids(model.config.vocab_size, 10, seed=5)
    params = SamplingParams(max_tokens=50)
    tokens = [t async for t in generate_tokens(model, ids, params, stats=stats)]
    if stats.stop_reason != "eog":
        assert stats.stop_reason == "context"
        assert len(tokens) == 3  # positions 10 and 11 filled, then one token from the last


async def test_second_load_hits_the_cache(
    models: dict[tuple[str, str | None], Path], tmp_path: Path
) -> None:
    path = models["gemma3", "Q8_0"]
    first = await load(path, tmp_path)
    assert first.stats.transformed > 0
    assert first.stats.cache_hits == 0
    second = await load(path, tmp_path)
    assert second.stats.cache_hits == second.stats.transformed == first.stats.transformed
    ids = prompt_ids(first.config.vocab_size, 5)
    a = await first.forward(ids)
    b = await second.forward(ids)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("arch", "quant", "overrides"),
    [
        ("llama", "Q4_K", {"tie_embeddings": True}),
        ("gemma3", None, {"final_logit_softcapping": 5.0}),
        ("qwen2", "Q8_0", {"n_kv_heads": 1, "n_heads": 4}),
    ],
    ids=["llama-tied-head-Q4_K", "gemma3-softcap", "qwen2-one-kv-head"],
)
async def test_variants_match_reference(
    arch: str, quant: str | None, overrides: dict[str, object], tmp_path: Path
) -> None:
    """A tied head read through MatMulNBits (with mins) and the embedding gather of the same
    payload; final logit soft-capping; 4 query heads sharing one KV head."""
    path = write_tiny_model(tmp_path / "variant.gguf", arch, quant=quant, **overrides)  # type: ignore[arg-type]
    model = await load(path, tmp_path)
    ids = prompt_ids(model.config.vocab_size)
    expected = ReferenceModel(path).logits(ids)
    got = await model.forward(ids, all_logits=True)
    assert_exact(got, expected)
    if "final_logit_softcapping" in overrides:
        assert np.abs(got).max() < 5.0


async def test_llama3_rope_frequency_factors(tmp_path: Path) -> None:
    """``rope_freqs.weight`` (Llama 3.1+) divides the RoPE frequencies, as in llama.cpp."""
    config = tiny_config("llama")
    vocab = vocab_for(config)
    weights = to_gguf_layout(config, random_hf_weights(config, len(vocab.tokens), seed=4))
    half = config.head_dim // 2
    weights["rope_freqs.weight"] = np.linspace(1.0, 8.0, half, dtype=np.float32)
    path = write_gguf(tmp_path / "llama3.gguf", config, weights, vocab)
    model = await load(path, tmp_path)
    assert model.config.rope_freq_factors is not None
    ids = prompt_ids(model.config.vocab_size)
    expected = ReferenceModel(path).logits(ids)
    assert_exact(await model.forward(ids, all_logits=True), expected)


async def test_context_length_does_not_change_the_compiled_graph(
    models: dict[tuple[str, str | None], Path], tmp_path: Path
) -> None:
    """One saved session per stage serves every context length: the KV caches' length
    and the RoPE tables' rows are symbolic in the graph."""
    from loaders import architecture_for
    from loaders.blocks import DecoderInputs
    from loaders.weights import WeightMap
    from pullweights import GraphBuilder
    from pullweights.gguf.reader import open_gguf
    from pullweights.graph.lowering import lower
    from pullweights.runtime.saved import session_key

    ctx = create_context(cache_dir=tmp_path / "cache")

    async def keys(context_length: int) -> list[str]:
        async with await open_gguf(models["gemma3", "Q8_0"]) as gguf:
            arch = architecture_for(gguf.architecture)
            config = arch.config(gguf.metadata, gguf.tensor("token_embd.weight").shape[0])
            b = GraphBuilder(ctx)
            io = DecoderInputs.declare(b, config, context_length)
            logits = arch.build(b, WeightMap(b, gguf), io)
            lowered = lower(b, {"logits": logits, **io.presents})
            return [session_key(ctx, stage) for stage in lowered.stages]

    assert await keys(16) == await keys(48)
    short, long = (
        await load(models["gemma3", "Q8_0"], tmp_path, context_length=16),
        await load(models["gemma3", "Q8_0"], tmp_path, context_length=48),
    )
    ids = prompt_ids(short.config.vocab_size, 12)
    np.testing.assert_array_equal(await short.forward(ids), await long.forward(ids))
    assert long.context == 48 and short.context == 16
