"""Text generation: prefill the prompt once, then one token per step, streamed as text.

Each generation borrows a KV cache slot from ``model.slots`` (waiting while all are lent:
see :mod:`loaders.slots`) for as long as it runs, so generations on one model may run at
the same time, each with its own cache; the slot goes back when the generator ends, is
closed, or its task is cancelled. The slot that already holds the longest prefix of the
prompt is chosen and only the rest is prefilled (``GenerationStats.cached_tokens``).

:func:`generate_steps` yields each token with the logits it was drawn from,
:func:`generate_tokens` the token ids, :func:`generate_chunks` text pieces with the steps
behind them, and :func:`generate` the text they complete
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
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from loaders.model import LanguageModel
from loaders.plan import Prompt, encode_with, token_ids
from loaders.sampling import Sampler, SamplingParams, StopMatcher
from loaders.slots import KVSlot
from loaders.tokenizer import MAX_ENCODE_CHARS
from pullweights.errors import ComputeError
from pullweights.events import Phase, mark, span

__all__ = [
    "GenerationStats",
    "Step",
    "TextChunk",
    "encode_prompt",
    "generate",
    "generate_chunks",
    "generate_steps",
    "generate_tokens",
]

StopReason = Literal["", "eog", "stop", "max_tokens", "context"]


@dataclass
class GenerationStats:
    """Timings of one generation, filled in while it runs (seconds, token counts).

    ``cached_tokens`` of the ``prompt_tokens`` were already in the slot (prefix reuse) and
    not prefilled again; ``wait_seconds`` is the time spent waiting for a free slot.
    """

    prompt_tokens: int = 0
    cached_tokens: int = 0
    generated_tokens: int = 0
    wait_seconds: float = 0.0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    time_to_first_token: float = 0.0
    stop_reason: StopReason = ""

    @property
    def prefill_tokens_per_second(self) -> float:
        """Prompt tokens prefilled (not reused from the cache) per second."""
        prefilled = self.prompt_tokens - self.cached_tokens
        return prefilled / self.prefill_seconds if self.prefill_seconds else 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        """Tokens per second after the first (each needs one decode step)."""
        steps = self.generated_tokens - 1
        return steps / self.decode_seconds if steps > 0 and self.decode_seconds else 0.0


@dataclass(frozen=True)
class Step:
    """One generated token and the logits it was drawn from (``float32[vocab]``, before
    any repetition penalty or temperature)."""

    token: int
    logits: npt.NDArray[np.float32]


@dataclass(frozen=True)
class TextChunk:
    """A piece of generated text and the steps generated since the previous piece (a
    character split across tokens, or text held back as a possible stop string, makes
    pieces lag tokens)."""

    text: str
    steps: tuple[Step, ...]


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
    return encode_with(
        model.tokenizer, model.metadata, prompt, chat=chat, max_chars=_max_chars(model)
    )


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


@asynccontextmanager
async def _generation_span(stats: GenerationStats) -> AsyncIterator[None]:
    """A ``generate`` span over one generation; its bytes: the tokens generated."""
    with span(Phase.GENERATE, "generate", ok_on=(GeneratorExit,)) as s:
        try:
            yield
        finally:
            s.nbytes = stats.generated_tokens


async def generate_steps(
    model: LanguageModel,
    prompt_ids: Sequence[int],
    params: SamplingParams | None = None,
    *,
    stats: GenerationStats | None = None,
    slot: KVSlot | None = None,
) -> AsyncGenerator[Step, None]:
    """Yield each generated token after ``prompt_ids`` with its logits.

    The generation runs in ``slot`` when given (the caller makes sure nothing else uses
    it meanwhile), else in a slot borrowed from ``model.slots`` until the generator ends.
    Either way the slot's cached prefix of the prompt is kept and only the rest prefilled.
    End-of-generation tokens are not yielded; ``params.stop`` strings are handled by
    :func:`generate_chunks`, not here.

    Raises:
        ComputeError: an empty prompt, or one longer than the model's context.
    """
    params = _params(params)
    stats = stats if stats is not None else GenerationStats()
    sampler = Sampler(params)
    history = token_ids(prompt_ids)
    if not history:
        raise ComputeError("generate: the prompt is empty (no tokens)")
    if len(history) > model.context:
        raise ComputeError(
            f"generate: the prompt has {len(history)} tokens; the context holds "
            f"{model.context} (load with a larger context_length)"
        )
    stats.prompt_tokens = len(history)
    waited = time.perf_counter()
    lent = model.slots.acquire(history) if slot is None else nullcontext(slot)
    async with lent as slot, _generation_span(stats):
        stats.cached_tokens = slot.reuse(history)
        start = time.perf_counter()
        stats.wait_seconds = start - waited
        prefill = history[stats.cached_tokens :]
        with span(Phase.PREFILL, "prompt", len(prefill)):
            logits = await model.forward(prefill, slot=slot)
        stats.prefill_seconds = time.perf_counter() - start
        decode_start = 0.0
        while True:
            row = logits[-1]
            token = sampler.sample(row, history)
            if stats.generated_tokens == 0:
                stats.time_to_first_token = time.perf_counter() - start
                mark(Phase.FIRST_TOKEN, "token", 1)
                decode_start = time.perf_counter()
            if model.tokenizer.is_eog(token):
                stats.stop_reason = "eog"
                break
            stats.generated_tokens += 1
            history.append(token)
            yield Step(token, row)
            if stats.generated_tokens >= params.max_tokens:
                stats.stop_reason = "max_tokens"
                break
            if slot.position >= model.context:
                stats.stop_reason = "context"
                break
            logits = await model.forward([token], slot=slot)
            stats.decode_seconds = time.perf_counter() - decode_start


async def generate_tokens(
    model: LanguageModel,
    prompt_ids: Sequence[int],
    params: SamplingParams | None = None,
    *,
    stats: GenerationStats | None = None,
    slot: KVSlot | None = None,
) -> AsyncGenerator[int, None]:
    """Yield generated token ids after ``prompt_ids`` (see :func:`generate_steps`).

    Raises:
        ComputeError: an empty prompt, or one longer than the model's context.
    """
    steps = generate_steps(model, prompt_ids, params, stats=stats, slot=slot)
    async with aclosing(steps):
        async for step in steps:
            yield step.token


async def generate_chunks(
    model: LanguageModel,
    prompt: Prompt,
    params: SamplingParams | None = None,
    *,
    chat: bool = False,
    stats: GenerationStats | None = None,
    slot: KVSlot | None = None,
) -> AsyncGenerator[TextChunk, None]:
    """Yield the generated text piece by piece with the steps behind each piece (see
    :func:`generate`); steps after the last piece come in a final chunk of empty text.

    Raises:
        ComputeError: an empty prompt, or one longer than the model's context.
    """
    params = _params(params)
    stats = stats if stats is not None else GenerationStats()
    ids = encode_prompt(model, prompt, chat=chat)
    decoder = model.tokenizer.stream()
    matcher = StopMatcher(params.stop)
    pending: list[Step] = []
    steps = generate_steps(model, ids, params, stats=stats, slot=slot)
    async with aclosing(steps):
        async for step in steps:
            pending.append(step)
            text = matcher.push(decoder.push(step.token))
            if text:
                yield TextChunk(text, tuple(pending))
                pending.clear()
            if matcher.stopped:
                stats.stop_reason = "stop"
                break
    if not matcher.stopped:
        tail = matcher.push(decoder.flush())
        if matcher.stopped:
            stats.stop_reason = "stop"
        tail += matcher.flush()
    else:
        tail = ""
    if tail or pending:
        yield TextChunk(tail, tuple(pending))


async def generate(
    model: LanguageModel,
    prompt: Prompt,
    params: SamplingParams | None = None,
    *,
    chat: bool = False,
    stats: GenerationStats | None = None,
    slot: KVSlot | None = None,
) -> AsyncIterator[str]:
    """Yield the generated text piece by piece (see :func:`encode_prompt` for ``prompt``).

    Greedy by default; ``params`` sets sampling (seeded when ``params.seed`` is given),
    ``max_tokens`` and stop strings. ``slot``: see :func:`generate_steps`.

    Raises:
        ComputeError: an empty prompt, or one longer than the model's context.
    """
    chunks = generate_chunks(model, prompt, params, chat=chat, stats=stats, slot=slot)
    async with aclosing(chunks):
        async for chunk in chunks:
            if chunk.text:
                yield chunk.text
