"""Which of ``pullweights run``'s words name the model and which is the prompt.

``run [MODEL ...] PROMPT`` (options anywhere), or ``run -m MODEL [-m PART ...] PROMPT``, or
``run ... -p PROMPT``. Without ``-m``, the leading words that name a model are the model:

* a path that exists (several paths: part files in order, concatenated they are the GGUF),
* an ``http://`` or ``https://`` URL (alone),
* an installed model name (``gemma3-270m``, ``qwen2.5-coder-0.5b``; alone).

The word after them is the prompt; a model without a prompt is a chat (``run MODEL``
starts ``pullweights chat``). When the *first* word names no model it is the prompt for
the default model only if it contains whitespace (``run "The capital of France is"``): a
single word that names nothing (``run qwen2.5 hello``, a mistyped file name) is an error
listing the installed models, never silently a prompt. A one-word prompt for the default
model is given with ``-p``: ``run -p Hello``. Exactly one prompt: quote it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from pullweights.cli.model_args import DEFAULT_MODEL
from pullweights.cli.parsing import UsageError
from pullweights.gguf.installed import (
    INSTALLED_MODELS,
    installed_model_available,
    installed_model_names,
)

__all__ = ["ModelAndPrompt", "installed_summary", "split_model_and_prompt"]


@dataclass(frozen=True)
class ModelAndPrompt:
    """What ``run`` loads (one name, path or URL, or part paths) and the prompt (None: a
    model was named without one, which is a chat)."""

    model: str | list[str]
    prompt: str | None

    @property
    def model_text(self) -> str:
        return self.model if isinstance(self.model, str) else " ".join(self.model)


def _is_url(text: str) -> bool:
    return text[:8].lower().startswith(("http://", "https://"))


def _kind(word: str) -> str | None:
    """``"url"``, ``"installed"`` or ``"path"`` when ``word`` names a model, else None."""
    if _is_url(word):
        return "url"
    if os.path.exists(word):
        return "path"
    if word in INSTALLED_MODELS:
        return "installed"
    return None


def installed_summary() -> str:
    """``installed: a, b; not installed: c (pip install ...)`` for messages."""
    have = [n for n in installed_model_names() if installed_model_available(n)]
    missing = [n for n in installed_model_names() if n not in have]
    text = f"installed: {', '.join(have) or 'none'}"
    if missing:
        hints = "; ".join(f"{n} ({INSTALLED_MODELS[n].install_hint})" for n in missing)
        text += f"; not installed: {hints}"
    return text


def _not_a_model(word: str, *, as_prompt: bool = True) -> UsageError:
    text = f"{word!r} is not a file, a URL or an installed model name ({installed_summary()})"
    if as_prompt:
        text += (
            f'. A prompt for the default model ({DEFAULT_MODEL}) contains a space ("The '
            f'capital of France is"), or is given with -p: pullweights run -p {word!r}'
        )
    return UsageError(text)


def split_model_and_prompt(
    words: Sequence[str], models: Sequence[str] | None = None, prompt: str | None = None
) -> ModelAndPrompt:
    """Split ``run``'s positional ``words`` into model and prompt (see the module docs).

    Args:
        words: the positionals, in order.
        models: the ``-m/--model`` values (part paths when several), if given.
        prompt: the ``-p/--prompt`` value, if given.

    Raises:
        UsageError: a first word that names no model and is no prompt, no words at all,
            two prompts, or words left over.
    """
    words = list(words)
    named = bool(models)
    if models:
        model: str | list[str] = list(models) if len(models) > 1 else models[0]
        for m in [model] if isinstance(model, str) else model:
            if _kind(m) is None:
                raise _not_a_model(m, as_prompt=False)
    else:
        taken = _leading_model(words)
        model = DEFAULT_MODEL if not taken else (taken if len(taken) > 1 else taken[0])
        if not taken and words and prompt is None and not any(c.isspace() for c in words[0]):
            raise _not_a_model(words[0])
        if not taken and words and prompt is not None:
            raise _not_a_model(words[0], as_prompt=False)
        words = words[len(taken) :]
        named = bool(taken)
    if prompt is not None:
        if words:
            raise UsageError(f"a prompt is given with -p; {words[0]!r} is left over")
        return ModelAndPrompt(model, prompt)
    if not words:
        if named:
            return ModelAndPrompt(model, None)
        raise UsageError(
            'no PROMPT: give the text to complete (pullweights run "Once upon a time"), or '
            "a MODEL to chat with"
        )
    if len(words) > 1:
        raise UsageError(
            f"one PROMPT, quoted, follows the model; got {len(words)} words after "
            f"{_quoted(model)}: {' '.join(map(repr, words))}"
        )
    return ModelAndPrompt(model, words[0])


def _leading_model(words: list[str]) -> list[str]:
    """The leading words that name the model: one URL or installed name, or paths."""
    if not words:
        return []
    first = _kind(words[0])
    if first is None:
        return []
    if first != "path":
        return words[:1]
    # Several existing paths are part files, in order (a prompt is never a path).
    taken = [words[0]]
    for word in words[1:]:
        if _kind(word) != "path":
            break
        taken.append(word)
    return taken


def _quoted(model: str | list[str]) -> str:
    return model if isinstance(model, str) else " ".join(model)
