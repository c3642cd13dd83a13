"""A multi-turn chat with a model, its history kept as messages and in the KV cache.

Each turn renders the whole conversation with the model's chat template, as the model
was trained to read it, and generates the reply. The history is *not* prefilled again:
the slot that holds the previous turns (prompt and reply) keeps every token the new
prompt starts with, so a turn prefills only the new user message and the template's turn
markers (see :mod:`loaders.slots`; ``GenerationStats.cached_tokens`` says how many).

Example::

    chat = Conversation(model, system="Answer in one sentence.")
    async for text in chat.send("What is the capital of France?"):
        print(text, end="", flush=True)
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from loaders.generate import GenerationStats, generate
from loaders.model import LanguageModel
from loaders.sampling import SamplingParams

__all__ = ["Conversation"]


class Conversation:
    """The messages of one chat and the model that answers them.

    Attributes:
        model: the model that answers.
        system: the system message opening every rendering (``None``: none).
        messages: the turns so far, ``{"role": "user" | "assistant", "content": ...}``.
        params: sampling of every turn unless :meth:`send` is given others.
    """

    def __init__(
        self,
        model: LanguageModel,
        *,
        system: str | None = None,
        params: SamplingParams | None = None,
    ) -> None:
        self.model = model
        self.system = system
        self.params = params or SamplingParams(max_tokens=1024)
        self.messages: list[dict[str, str]] = []

    def reset(self, system: str | None = None) -> None:
        """Forget every turn; ``system`` (when given) replaces the system message."""
        self.messages.clear()
        if system is not None:
            self.system = system or None

    def rendered_messages(self) -> list[dict[str, str]]:
        """The messages the template renders: the system message, then the turns."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.messages

    async def send(
        self,
        text: str,
        params: SamplingParams | None = None,
        *,
        stats: GenerationStats | None = None,
    ) -> AsyncGenerator[str, None]:
        """Add the user message ``text`` and yield the reply piece by piece.

        The reply joins the history when the generation ends, also when it is stopped
        early (the generator closed or its task cancelled): the history then holds what
        was shown. A turn that fails before any text (a prompt longer than the context, a
        template refusing the roles) leaves the history as it was.

        Raises:
            ComputeError: the conversation no longer fits in the context.
            FormatError: the chat template refuses the conversation.
        """
        self.messages.append({"role": "user", "content": text})
        reply: list[str] = []
        answered = True
        try:
            async for piece in generate(
                self.model, self.rendered_messages(), params or self.params, stats=stats
            ):
                reply.append(piece)
                yield piece
        except Exception:
            if not reply:
                self.messages.pop()
                answered = False
            raise
        finally:  # also when cancelled or closed early: keep what was shown
            if answered:
                self.messages.append({"role": "assistant", "content": "".join(reply)})
