"""The two demo models, loaded from their installed part files (``-m model``).

gemma3-270m (Q4_K_M: Q8_0, Q5_0, Q4_K, Q6_K tensors) and Qwen2.5-Coder-0.5B-Instruct
(Q8_0, Q5_0, Q4_K, Q6_K) must continue "The capital of France is" sensibly: gemma3's top
three next tokens are " the", " a", " Paris" (as llama.cpp and transformers rank them),
Qwen's top token is " Paris".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loaders import GenerationStats, LanguageModel, SamplingParams, generate, load_model
from pullweights.runtime.context import create_context

pytestmark = [pytest.mark.model, pytest.mark.slow]

PROMPT = "The capital of France is"


async def top_tokens(model: LanguageModel, prompt: str, n: int) -> list[str]:
    model.reset()
    logits = await model.forward(model.tokenizer.encode(prompt))
    best = np.argsort(-logits[-1])[:n]
    return [model.tokenizer.decode([int(i)]) for i in best]


async def test_gemma3_next_tokens_and_cache(tmp_path: Path) -> None:
    context = create_context(cache_dir=tmp_path)
    model = await load_model("gemma3-270m", context=context, context_length=1024)
    assert model.config.arch == "gemma3"
    assert await top_tokens(model, PROMPT, 3) == [" the", " a", " Paris"]
    assert model.stats.cache_hits == 0
    again = await load_model("gemma3-270m", context=context, context_length=1024)
    assert again.stats.cache_hits == again.stats.transformed == model.stats.transformed
    assert again.stats.seconds < model.stats.seconds


async def test_gemma3_long_prompt_crosses_the_sliding_window(tmp_path: Path) -> None:
    """600 tokens (past the 512-token window) then decoding: the text stays on topic."""
    model = await load_model(
        "gemma3-270m", context=create_context(cache_dir=tmp_path), context_length=1024
    )
    story = "Paris is the capital and largest city of France. " * 60
    stats = GenerationStats()
    text = "".join(
        [
            t
            async for t in generate(
                model, story + PROMPT, SamplingParams(max_tokens=8), stats=stats
            )
        ]
    )
    assert stats.prompt_tokens > 512
    assert "Paris" in text


async def test_qwen2_next_token_and_chat(tmp_path: Path) -> None:
    model = await load_model(
        "qwen2.5-coder-0.5b", context=create_context(cache_dir=tmp_path), context_length=1024
    )
    assert model.config.arch == "qwen2"
    assert (await top_tokens(model, PROMPT, 1)) == [" Paris"]
    stats = GenerationStats()
    reply = "".join(
        [
            t
            async for t in generate(
                model,
                "What is the capital of France? Answer in one word.",
                SamplingParams(max_tokens=16),
                chat=True,
                stats=stats,
            )
        ]
    )
    assert "Paris" in reply
    assert stats.stop_reason in ("eog", "max_tokens")
