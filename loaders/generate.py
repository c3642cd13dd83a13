"""Text generation: prefill the prompt once, then one token per step, streamed as text.

:func:`generate_tokens` yields token ids; :func:`generate` yields the text they complete
(through the tokenizer's :class:`~loaders.tokenizer.StreamDecoder`, so a character split
across tokens is never cut), holding back text that could begin a stop string. Generation
ends at an end-of-generation token (EOS, ``<end_of_turn>``, ``<|im_end|>``...), a stop
string, ``max_tokens``, or a full context. Pass a :class:`GenerationStats` to get timings.

Example::

    stats = GenerationStats()
    params = SamplingParams(temperature=0.7, top_p=0.9, seed=1, max_tokens=64)
    async for text in generate(model, "Once upon a time", params, stats=stats):
        print(text, end="", flush=True)
    print(f"\\n{stats.decode_tokens_per_second:.1f} tok/s")
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from loaders.chat import chat_template_from_metadata, chat_template_name, encode_chat
from loaders.model import LanguageModel
from loaders.sampling import Sampler, SamplingParams, StopMatcher
from loaders.tokenizer import MAX_ENCODE_CHARS
from pullweights.errors import ComputeError

__all__ = ["GenerationStats", "encode_prompt", "generate", "generate_tokens"]

StopReason = Literal["", "eog", "stop", "max_tokens", "context"]
Prompt = str | Sequence[Mapping[str, Any]] | Sequence[int]


@dataclass
class GenerationStats:
    """Timings of one generation, filled in while it runs (seconds, token counts)."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    time_to_first_token: float = 0.0
    stop_reason: StopReason = ""

    @property
    def prefill_tokens_per_second(self) -> float:
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds else 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        """Tokens per second after the first (each needs one decode step)."""
        steps = self.generated_tokens - 1
        return steps / self.decode_seconds if steps > 0 and self.decode_seconds else 0.0


def encode_prompt(model: LanguageModel, prompt: Prompt, *, chat: bool = False) -> list[int]:
    """Token ids of ``prompt``.

    Args:
        prompt: text; chat messages (``[{"role": ..., "content": ...}]``, always rendered
            with the model's chat template); or token ids, used as they are.
        chat: render a text prompt as one user message with the chat template.

    Raises:
        ComputeError: the prompt has no tokens.
        FormatError: the chat template fails.
    """
    tokenizer = model.tokenizer
    if isinstance(prompt, str):
        if chat:
            messages: Sequence[Mapping[str, Any]] = [{"role": "user", "content": prompt}]
            ids = _chat_ids(model, messages)
        else:
            ids = tokenizer.encode(
                prompt, add_special=True, parse_special=False, max_chars=_max_chars(model)
            )
    elif isinstance(prompt, Sequence) and prompt and all(isinstance(m, Mapping) for m in prompt):
        ids = _chat_ids(model, prompt)  # type: ignore[arg-type]
    else:
        ids = _token_ids(prompt)
    if not ids:
        raise ComputeError("generate: the prompt is empty (it encodes to no tokens)")
    return ids


def _token_ids(prompt: object) -> list[int]:
    """A prompt given as token ids: a sequence of integers."""
    if not isinstance(prompt, (Sequence, np.ndarray)) or isinstance(prompt, (str, bytes)):
        raise ComputeError(
            f"generate: the prompt must be text, chat messages or token ids, got "
            f"{type(prompt).__name__}"
        )
    ids: list[int] = []
    for t in prompt:
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
            raise ComputeError(f"generate: token id {t!r} is not an integer")
        ids.append(int(t))
    return ids


def _params(params: object) -> SamplingParams:
    if params is None:
        return SamplingParams()
    if not isinstance(params, SamplingParams):
        raise ComputeError(f"generate: params must be SamplingParams, got {type(params).__name__}")
    return params


def _max_chars(model: LanguageModel) -> int:
    """Longest text that could still fit in the context: no token stands for more than
    the longest vocabulary entry."""
    return min(MAX_ENCODE_CHARS, model.context * model.tokenizer.max_token_chars)


def _chat_ids(model: LanguageModel, messages: Sequence[Mapping[str, Any]]) -> list[int]:
    template = chat_template_from_metadata(model.metadata)
    return encode_chat(
        model.tokenizer,
        messages,
        template=template,
        name=chat_template_name(model.metadata),
        max_chars=_max_chars(model),
    )


async def generate_tokens(
    model: LanguageModel,
    prompt_ids: Sequence[int],
    params: SamplingParams | None = None,
    *,
    stats: GenerationStats | None = None,
) -> AsyncGenerator[int, None]:
    """Yield generated token ids after ``prompt_ids`` (the KV cache starts empty).

    End-of-generation tokens are not yielded. ``params.stop`` strings are handled by
    :func:`generate`, not here.

    Raises:
        ComputeError: an empty prompt, or one longer than the model's context.
    """
    params = _params(params)
    stats = stats if stats is not None else GenerationStats()
    sampler = Sampler(params)
    history = _token_ids(prompt_ids)
    if not history:
        raise ComputeError("generate: the prompt is empty (no tokens)")
    if len(history) > model.context:
        raise ComputeError(
            f"generate: the prompt has {len(history)} tokens; the context holds "
            f"{model.context} (load with a larger context_length)"
        )
    stats.prompt_tokens = len(history)
    model.reset()
    start = time.perf_counter()
    logits = await model.forward(history)
    stats.prefill_seconds = time.perf_counter() - start
    decode_start = 0.0
    while True:
        token = sampler.sample(np.asarray(logits[-1]), history)
        if stats.generated_tokens == 0:
            stats.time_to_first_token = time.perf_counter() - start
            decode_start = time.perf_counter()
        if model.tokenizer.is_eog(token):
            stats.stop_reason = "eog"
            break
        stats.generated_tokens += 1
        history.append(token)
        yield token
        if stats.generated_tokens >= params.max_tokens:
            stats.stop_reason = "max_tokens"
            break
        if model.position >= model.context:
            stats.stop_reason = "context"
            break
        logits = await model.forward([token])
        stats.decode_seconds = time.perf_counter() - decode_start


async def generate(
    model: LanguageModel,
    prompt: Prompt,
    params: SamplingParams | None = None,
    *,
    chat: bool = False,
    stats: GenerationStats | None = None,
) -> AsyncIterator[str]:
    """Yield the generated text piece by piece (see :func:`encode_prompt` for ``prompt``).

    Greedy by default; ``params`` sets sampling (seeded when ``params.seed`` is given),
    ``max_tokens`` and stop strings.

    Raises:
        ComputeError: an empty prompt, or one longer than the model's context.
    """
    params = _params(params)
    stats = stats if stats is not None else GenerationStats()
    ids = encode_prompt(model, prompt, chat=chat)
    decoder = model.tokenizer.stream()
    matcher = StopMatcher(params.stop)
    async with aclosing(generate_tokens(model, ids, params, stats=stats)) as tokens:
        async for token in tokens:
            text = matcher.push(decoder.push(token))
            if text:
                yield text
            if matcher.stopped:
                stats.stop_reason = "stop"
                return
    tail = matcher.push(decoder.flush())
    if matcher.stopped:
        stats.stop_reason = "stop"
    tail += matcher.flush()
    if tail:
        yield tail
