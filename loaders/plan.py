"""What a load is about to build, known from the GGUF header before any weight is pulled.

:func:`loaders.load_model` hands a :class:`LoadPlan` to its ``on_plan`` hook once the
header is parsed and the config and context length are decided, and before a single weight
byte is read, so a caller can refuse a load that cannot succeed (a prompt longer than the
context) while that costs almost nothing.

Counting a prompt's tokens needs the tokenizer, which takes a while to build (about 1 s
for gemma3's 262,144 tokens) and is normally built while the last stage compiles. So
:meth:`LoadPlan.token_bound` first bounds the count from the text alone: every token
covers at least one byte of the (rendered) text except the BOS / EOS the tokenizer adds
and SentencePiece's one space prefix, so ``bytes + 3`` tokens is an upper bound. Only a
prompt whose bound exceeds the context needs :meth:`LoadPlan.encode`; the tokenizer it
builds is the one the load then uses (never built twice).

Example::

    async def check(plan: LoadPlan) -> None:
        if plan.token_bound(prompt) > plan.context_length:
            if len(await plan.encode(prompt)) > plan.context_length:
                raise ValueError("prompt too long")

    model = await load_model("gemma3-270m", on_plan=check)
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loaders.chat import (
    chat_template_from_metadata,
    chat_template_name,
    encode_chat,
    render_chat,
)
from loaders.config import ModelConfig
from loaders.tokenizer import Tokenizer
from pullweights.errors import ComputeError
from pullweights.events import Phase, span
from pullweights.runtime.threads import joined

__all__ = ["LoadPlan", "Prompt", "encode_with", "token_ids", "user_message"]

#: What :func:`loaders.generate` accepts as a prompt: text, chat messages or token ids.
Prompt = str | Sequence[Mapping[str, Any]] | Sequence[int]

#: Tokens a tokenizer may add to text without covering any of its bytes: BOS, EOS and
#: SentencePiece's space prefix.
_ADDED_TOKENS = 3


@dataclass
class LoadPlan:
    """A load after its header: the model's config, the context it gets, its metadata.

    Attributes:
        config: the hyper-parameters read from the header.
        context_length: positions the KV cache will hold (the request, or the default,
            capped at ``config.train_context``).
        requested_context: the ``context_length`` the caller asked for (None: default).
        metadata: the GGUF metadata (vocabulary and chat template included).
    """

    config: ModelConfig
    context_length: int
    requested_context: int | None
    metadata: Mapping[str, object]
    #: The weight cache directory the tokenizer's compiled model is kept in (None: none).
    cache_dir: Path | None = None
    _tokenizer: asyncio.Future[Tokenizer] | None = field(default=None, repr=False)

    @property
    def context_capped(self) -> bool:
        """True when the request was above the model's training context and was capped."""
        requested = self.requested_context
        return requested is not None and requested > self.context_length

    def start_tokenizer(self) -> asyncio.Future[Tokenizer]:
        """Start building the tokenizer in a worker thread (once; later calls return the
        same future). Reported as a ``tokenizer`` span of :mod:`pullweights.events`."""
        if self._tokenizer is None:
            metadata, cache_dir = self.metadata, self.cache_dir

            def build() -> Tokenizer:
                with span(Phase.TOKENIZER, "tokenizer"):
                    return Tokenizer.from_gguf_metadata(metadata, cache_dir=cache_dir)

            self._tokenizer = asyncio.ensure_future(joined(build))
        return self._tokenizer

    async def tokenizer(self) -> Tokenizer:
        """The model's tokenizer (built on first use)."""
        return await self.start_tokenizer()

    async def cancel(self) -> None:
        """Cancel a tokenizer build that is still running (the load failed) and wait
        until its worker thread has ended."""
        if self._tokenizer is not None and not self._tokenizer.done():
            self._tokenizer.cancel()
            await asyncio.wait([self._tokenizer])

    def token_bound(self, prompt: Prompt, *, chat: bool = False) -> int:
        """An upper bound on the prompt's token count, from its text alone (see the module
        docs); token ids count as they are.

        Raises:
            FormatError: the chat template fails.
        """
        if not isinstance(prompt, str) and all(isinstance(t, int) for t in prompt):
            return len(prompt)
        if isinstance(prompt, str) and not chat:
            return len(prompt.encode("utf-8")) + _ADDED_TOKENS
        messages = user_message(prompt) if isinstance(prompt, str) else prompt
        bos, eos = _special_text(self.metadata, "bos"), _special_text(self.metadata, "eos")
        text = render_chat(
            chat_template_from_metadata(self.metadata),
            messages,  # type: ignore[arg-type]
            bos_token=bos,
            eos_token=eos,
            name=chat_template_name(self.metadata),
        )
        return len(text.encode("utf-8")) + _ADDED_TOKENS

    async def encode(self, prompt: Prompt, *, chat: bool = False) -> list[int]:
        """The prompt's token ids, exactly as generation will encode it (builds the
        tokenizer if it is not built yet)."""
        return encode_with(await self.tokenizer(), self.metadata, prompt, chat=chat)


def user_message(text: str) -> list[dict[str, str]]:
    """``text`` as the one user message of a chat."""
    return [{"role": "user", "content": text}]


def encode_with(
    tokenizer: Tokenizer,
    metadata: Mapping[str, object],
    prompt: Prompt,
    *,
    chat: bool = False,
    max_chars: int | None = None,
) -> list[int]:
    """Token ids of ``prompt`` (see :func:`loaders.encode_prompt`); text (a prompt, or a
    rendered chat) longer than ``max_chars`` is refused before it is tokenized.

    Raises:
        ComputeError: the prompt has no tokens, is too long, or is neither text, chat
            messages nor token ids.
        FormatError: the chat template fails.
    """
    limit: dict[str, int] = {} if max_chars is None else {"max_chars": max_chars}
    if isinstance(prompt, str) and not chat:
        ids = tokenizer.encode(prompt, add_special=True, parse_special=False, **limit)
    elif isinstance(prompt, str) or (
        isinstance(prompt, Sequence) and prompt and all(isinstance(m, Mapping) for m in prompt)
    ):
        messages = user_message(prompt) if isinstance(prompt, str) else prompt
        ids = encode_chat(
            tokenizer,
            messages,  # type: ignore[arg-type]
            template=chat_template_from_metadata(metadata),
            name=chat_template_name(metadata),
            max_chars=max_chars,
        )
    else:
        ids = token_ids(prompt)
    if not ids:
        raise ComputeError("generate: the prompt is empty (it encodes to no tokens)")
    return ids


def token_ids(prompt: object) -> list[int]:
    """A prompt given as token ids: a sequence of integers (``ComputeError`` otherwise)."""
    if not isinstance(prompt, Sequence | np.ndarray) or isinstance(prompt, str | bytes):
        raise ComputeError(
            f"generate: the prompt must be text, chat messages or token ids, got "
            f"{type(prompt).__name__}"
        )
    ids: list[int] = []
    for t in prompt:
        if isinstance(t, bool) or not isinstance(t, int | np.integer):
            raise ComputeError(f"generate: token id {t!r} is not an integer")
        ids.append(int(t))
    return ids


def _special_text(metadata: Mapping[str, object], which: str) -> str:
    """The text of the BOS or EOS token the metadata names ("" when it names none)."""
    index = metadata.get(f"tokenizer.ggml.{which}_token_id")
    tokens = metadata.get("tokenizer.ggml.tokens")
    if not isinstance(index, int) or not isinstance(tokens, (list, tuple)):
        return ""
    return str(tokens[index]) if 0 <= index < len(tokens) else ""
