"""KV cache slots: concurrent generations, prefix reuse, waiting and cancellation.

Prefix reuse is checked against a full prefill of the same prompt in a fresh slot: the
logits of every new position must agree within ``1e-5 * max |logit|`` (the tolerance of
the reference tests). Measured on onnxruntime 1.32 CPU: bit-identical (difference 0) for
gemma3 (sliding window shorter than the kept prefix), qwen2 and llama, with exact and
int8 activations.
"""

from __future__ import annotations

import asyncio
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
from loaders.slots import KVSlot, SlotPool, common_prefix
from pullweights import TensorDescriptor
from pullweights.errors import ComputeError, GraphError
from pullweights.runtime.context import create_context
from tests.reference import write_tiny_model

EXACT = 1e-5


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("slots")
    return {
        "gemma3": write_tiny_model(root / "gemma3.gguf", "gemma3", quant="Q8_0"),
        "qwen2": write_tiny_model(root / "qwen2.gguf", "qwen2", quant="Q8_0"),
    }


async def load(path: Path, tmp_path: Path, **kw: object) -> LanguageModel:
    context = create_context(cache_dir=tmp_path / "cache")
    kw.setdefault("context_length", 64)
    return await load_model(str(path), context=context, **kw)  # type: ignore[arg-type]


def ids(model: LanguageModel, n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(t) for t in rng.integers(0, model.config.vocab_size, n)]


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([7], [8]) == 0


@pytest.mark.parametrize("arch", ["gemma3", "qwen2"])
async def test_prefix_reuse_equals_a_full_prefill(
    arch: str, tiny: dict[str, Path], tmp_path: Path
) -> None:
    model = await load(tiny[arch], tmp_path, slots=1)
    prefix, first, second = ids(model, 20, 1), ids(model, 15, 2), ids(model, 12, 3)
    async with model.slots.acquire() as slot:
        await model.forward(prefix + first, slot=slot)
        kept = slot.reuse(prefix + second)
        assert kept == common_prefix(prefix + first, prefix + second) >= 20
        reused = await model.forward((prefix + second)[kept:], slot=slot, all_logits=True)
        assert slot.position == len(prefix + second)
    model.reset()
    full = await model.forward(prefix + second, all_logits=True)
    tolerance = EXACT * max(10.0, float(np.abs(full).max()))
    assert np.abs(reused - full[kept:]).max() < tolerance


async def test_reuse_keeps_one_token_to_run(tiny: dict[str, Path], tmp_path: Path) -> None:
    """The same prompt again reuses all but its last token (whose logits are needed)."""
    model = await load(tiny["qwen2"], tmp_path)
    prompt = ids(model, 10, 4)
    first, second = GenerationStats(), GenerationStats()
    params = SamplingParams(max_tokens=4)
    a = [t async for t in generate_tokens(model, prompt, params, stats=first)]
    b = [t async for t in generate_tokens(model, prompt, params, stats=second)]
    assert a == b
    assert first.cached_tokens == 0
    assert second.cached_tokens == len(prompt) - 1


async def test_concurrent_generations_equal_sequential_ones(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    """8 greedy generations at once, through 3 slots (so some wait), give exactly the
    tokens of the same generations run one at a time on a fresh model."""
    prompts = [[*ids_base, i] for i, ids_base in enumerate([[5, 9, 2]] * 4 + [[7, 1]] * 4)]
    params = SamplingParams(max_tokens=12)
    sequential = await load(tiny["gemma3"], tmp_path, slots=1)
    expected = []
    for prompt in prompts:
        expected.append([t async for t in generate_tokens(sequential, prompt, params)])
    concurrent = await load(tiny["gemma3"], tmp_path, slots=3)

    async def one(prompt: list[int]) -> list[int]:
        return [t async for t in generate_tokens(concurrent, prompt, params)]

    got = await asyncio.gather(*(one(p) for p in prompts))
    assert got == expected
    assert concurrent.slots.peak_in_use == 3 and concurrent.slots.in_use == 0


async def test_two_concurrent_generate_calls_never_mix(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    """Regression: two ``generate`` calls at once on one model (default: one slot) used to
    share one KV cache and both produced garbage; now they queue for the slot."""
    model = await load(tiny["qwen2"], tmp_path)
    params = SamplingParams(max_tokens=10)

    async def text(prompt: str) -> str:
        return "".join([t async for t in generate(model, prompt, params)])

    alone = [await text("Hello world"), await text("The capital of France")]
    together = await asyncio.gather(text("Hello world"), text("The capital of France"))
    assert list(together) == alone
    assert alone[0] != alone[1]


async def test_cancelling_one_generation_frees_its_slot(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    """A generation cancelled mid-way (both running) returns its slot; the other one
    finishes with exactly the tokens it gives alone."""
    model = await load(tiny["qwen2"], tmp_path, slots=2)
    params = SamplingParams(max_tokens=30)
    prompt_a, prompt_b = ids(model, 6, 5), ids(model, 6, 6)
    alone = await _collect(model, prompt_b, params)
    running = asyncio.Event()

    async def endless() -> None:
        async for _ in generate_tokens(model, prompt_a, SamplingParams(max_tokens=10_000)):
            running.set()

    victim = asyncio.create_task(endless())
    await running.wait()
    survivor: list[int] = []

    async def second() -> list[int]:
        async for token in generate_tokens(model, prompt_b, params):
            survivor.append(token)
            if len(survivor) == 3:
                victim.cancel()
        return survivor

    assert await second() == alone
    with pytest.raises(asyncio.CancelledError):
        await victim
    assert model.slots.in_use == 0
    both = await asyncio.gather(
        _collect(model, prompt_b, params), _collect(model, prompt_b, params)
    )
    assert both == [alone, alone]


async def _collect(model: LanguageModel, prompt: list[int], params: SamplingParams) -> list[int]:
    return [t async for t in generate_tokens(model, prompt, params)]


async def test_closing_a_generator_early_returns_the_slot(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    model = await load(tiny["qwen2"], tmp_path, slots=1)
    tokens = generate_tokens(model, ids(model, 5, 7), SamplingParams(max_tokens=20))
    await anext(tokens)
    assert model.slots.in_use == 1
    await tokens.aclose()
    assert model.slots.in_use == 0


async def test_an_error_inside_returns_the_slot(tiny: dict[str, Path], tmp_path: Path) -> None:
    model = await load(tiny["qwen2"], tmp_path, slots=1, context_length=16)
    with pytest.raises(ComputeError, match="context holds 16"):
        async with model.slots.acquire() as slot:
            await model.forward(ids(model, 17, 8), slot=slot)
    assert model.slots.in_use == 0
    with pytest.raises(GraphError, match="slots must be >= 1"):
        await load(tiny["qwen2"], tmp_path, slots=0)


async def test_pool_waits_prefers_the_longest_prefix_and_survives_cancelled_waiters() -> None:
    pool = SlotPool(TensorDescriptor("float32", [1, 1, 8, 4]), n_layers=2, size=2)
    assert pool.slot_bytes == 2 * 2 * 8 * 4 * 4
    async with pool.acquire() as a:
        a.tokens.extend([1, 2, 3])
    async with pool.acquire([9]) as b:  # no match: a new slot, ``a`` keeps its tokens
        assert b is not a
        b.tokens.extend([9, 9])
    async with pool.acquire([1, 2, 5]) as slot:
        assert slot is a
        assert slot.reuse([1, 2, 5]) == 2 and slot.tokens == [1, 2]
    async with pool.acquire([9, 9, 9]) as slot:
        assert slot is b

    # Both lent: a third caller waits; one waiter cancelled does not lose a slot.
    holders = [pool.acquire(), pool.acquire()]
    lent = [await h.__aenter__() for h in holders]
    waiter = asyncio.create_task(_hold(pool))
    cancelled = asyncio.create_task(_hold(pool))
    await asyncio.sleep(0.01)
    assert pool.waiting == 2 and not waiter.done()
    cancelled.cancel()
    await holders[0].__aexit__(None, None, None)
    got = await asyncio.wait_for(waiter, 5)
    assert got is lent[0]
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await holders[1].__aexit__(None, None, None)
    assert pool.in_use == 0 and pool.created == 2
    with pytest.raises(ComputeError, match="size must be >= 1"):
        SlotPool(TensorDescriptor("float32", [1, 1, 8, 4]), n_layers=1, size=0)


async def _hold(pool: SlotPool) -> KVSlot:
    async with pool.acquire() as slot:
        return slot
