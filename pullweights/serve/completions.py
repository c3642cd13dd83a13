"""``/v1/chat/completions`` and ``/v1/completions``: one generation per request.

A request is checked (:mod:`pullweights.serve.protocol`), its model found (and loaded on
first use), its prompt rendered and tokenized — a prompt longer than the context is a
400 ``context_length_exceeded`` before anything is generated — then generated in a KV
cache slot of the model (:mod:`loaders.slots`: it waits while every slot is busy, and
reuses the slot holding the longest prefix of the prompt). Streaming answers are
server-sent events (``data: {chunk}``, then ``data: [DONE]``). A client that goes away
cancels its generation: aiohttp cancels the handler (the server runs with handler
cancellation), or a write to the closed stream fails; either way the generator is closed
and the slot returned.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from loaders import (
    GenerationStats,
    LanguageModel,
    SamplingParams,
    Step,
    TextChunk,
    encode_prompt,
    generate_chunks,
)
from pullweights.errors import ComputeError, FormatError, PullWeightsError
from pullweights.serve.logprobs import chat_logprobs, completion_logprobs
from pullweights.serve.metrics import Metrics
from pullweights.serve.protocol import (
    ApiError,
    GenerationRequest,
    parse_body,
    parse_chat,
    parse_completion,
)
from pullweights.serve.registry import ModelRegistry

__all__ = ["Completions"]

FINISH_REASONS = {"eog": "stop", "stop": "stop", "max_tokens": "length", "context": "length"}


@dataclass
class _Run:
    """One request's generation: what it asked, the model, the prompt ids, its stats."""

    request: GenerationRequest
    model: LanguageModel
    ids: list[int]
    id: str
    created: int = field(default_factory=lambda: int(time.time()))
    stats: GenerationStats = field(default_factory=GenerationStats)
    text_length: int = 0

    @property
    def object(self) -> str:
        return "chat.completion" if self.request.chat else "text_completion"

    def params(self) -> SamplingParams:
        r = self.request
        return SamplingParams(
            temperature=r.temperature,
            top_k=r.top_k,
            top_p=r.top_p,
            repetition_penalty=r.repetition_penalty,
            seed=r.seed,
            max_tokens=r.max_tokens if r.max_tokens is not None else self.model.context,
            stop=list(r.stop),
        )

    def chunks(self) -> AsyncGenerator[TextChunk, None]:
        return generate_chunks(self.model, self.ids, self.params(), stats=self.stats)

    def logprobs(self, steps: list[Step] | tuple[Step, ...]) -> dict[str, Any] | None:
        top = self.request.logprobs
        if top is None:
            return None
        tokenizer = self.model.tokenizer
        if self.request.chat:
            return chat_logprobs(tokenizer, steps, top)
        return completion_logprobs(tokenizer, steps, top, self.text_length)

    @property
    def finish_reason(self) -> str:
        return FINISH_REASONS.get(self.stats.stop_reason, "stop")

    def usage(self) -> dict[str, Any]:
        s = self.stats
        return {
            "prompt_tokens": s.prompt_tokens,
            "completion_tokens": s.generated_tokens,
            "total_tokens": s.prompt_tokens + s.generated_tokens,
            "prompt_tokens_details": {"cached_tokens": s.cached_tokens},
        }

    def envelope(self, choices: list[dict[str, Any]], chunk: bool) -> dict[str, Any]:
        obj = self.object + (".chunk" if chunk and self.request.chat else "")
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.request.model,
            "system_fingerprint": None,
            "choices": choices,
        }


class Completions:
    """The two generation routes over a registry of models, counting into ``metrics``."""

    def __init__(self, registry: ModelRegistry, metrics: Metrics) -> None:
        self.registry = registry
        self.metrics = metrics

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/chat/completions``."""
        return await self._serve(request, parse_chat(parse_body(await request.read())))

    async def completion(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/completions``."""
        return await self._serve(request, parse_completion(parse_body(await request.read())))

    async def _serve(self, http: web.Request, request: GenerationRequest) -> web.StreamResponse:
        run = await self._prepare(request)
        self.metrics.active += 1
        try:
            if request.stream:
                return await self._stream(http, run)
            return await self._whole(run)
        except asyncio.CancelledError:
            self.metrics.cancelled += 1
            raise
        finally:
            self.metrics.active -= 1
            self.metrics.generated(run.stats)

    async def _prepare(self, request: GenerationRequest) -> _Run:
        entry = self.registry.entry(request.model)
        try:
            model = await entry.get()
        except PullWeightsError as exc:
            raise ApiError(
                500, f"model '{request.model}' failed to load: {exc}", type="server_error"
            ) from exc
        param = "messages" if request.chat else "prompt"
        try:
            ids = encode_prompt(model, request.prompt)
        except (ComputeError, FormatError) as exc:
            raise ApiError(400, str(exc), param=param) from None
        vocab = model.config.vocab_size
        if not all(0 <= t < vocab for t in ids):
            raise ApiError(400, f"token ids must lie in [0, {vocab})", param=param)
        if len(ids) > model.context:
            raise ApiError(
                400,
                f"This model's maximum context length is {model.context} tokens. However, "
                f"your {param} resulted in {len(ids)} tokens. Please reduce the length of "
                f"the {param}.",
                param=param,
                code="context_length_exceeded",
            )
        prefix = "chatcmpl" if request.chat else "cmpl"
        return _Run(request, model, ids, id=f"{prefix}-{uuid.uuid4().hex}")

    async def _whole(self, run: _Run) -> web.Response:
        texts: list[str] = []
        steps: list[Step] = []
        async with aclosing(run.chunks()) as chunks:
            async for chunk in chunks:
                texts.append(chunk.text)
                if run.request.logprobs is not None:
                    steps.extend(chunk.steps)
        text = "".join(texts)
        choice: dict[str, Any] = {"index": 0, "logprobs": run.logprobs(steps)}
        if run.request.chat:
            choice["message"] = {"role": "assistant", "content": text, "refusal": None}
        else:
            choice["text"] = text
        choice["finish_reason"] = run.finish_reason
        body = run.envelope([choice], chunk=False)
        body["usage"] = run.usage()
        return web.json_response(body)

    async def _stream(self, http: web.Request, run: _Run) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(http)
        chat = run.request.chat

        async def send(data: dict[str, Any] | str) -> None:
            text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
            await response.write(f"data: {text}\n\n".encode())

        def choice(text: str | None, steps: tuple[Step, ...], finish: str | None) -> dict[str, Any]:
            item: dict[str, Any] = {"index": 0}
            if chat:
                item["delta"] = {} if text is None else {"content": text}
            else:
                item["text"] = text or ""
            item["logprobs"] = run.logprobs(steps) if steps else None
            item["finish_reason"] = finish
            return item

        try:
            if chat:
                first = choice("", (), None)
                first["delta"] = {"role": "assistant", "content": ""}
                await send(run.envelope([first], chunk=True))
            async with aclosing(run.chunks()) as chunks:
                async for chunk in chunks:
                    if not chunk.text and run.request.logprobs is None:
                        continue
                    await send(run.envelope([choice(chunk.text, chunk.steps, None)], chunk=True))
                    run.text_length += len(chunk.text)
            await send(run.envelope([choice(None, (), run.finish_reason)], chunk=True))
            if run.request.include_usage:
                final = run.envelope([], chunk=True)
                final["usage"] = run.usage()
                await send(final)
            await send("[DONE]")
        except ConnectionResetError:
            self.metrics.cancelled += 1  # the client went away: the generator is closed
            return response
        except PullWeightsError as exc:
            await send(ApiError(500, str(exc), type="server_error").body())
        await response.write_eof()
        return response
