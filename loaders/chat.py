"""Chat prompts: a conversation rendered with the model's Jinja chat template.

GGUF files carry the Hugging Face chat template in ``tokenizer.chat_template``; it is rendered
the way ``transformers`` renders it (sandboxed Jinja, ``trim_blocks`` and ``lstrip_blocks``,
``raise_exception``, ``tojson``, ``strftime_now``, loop controls). A file without a template
gets :func:`default_chat_template`: Gemma's turn format for the Gemma family, ChatML for
everything else.

Example::

    template = chat_template_from_metadata(gguf.metadata)
    ids = encode_chat(tokenizer, [{"role": "user", "content": "Hi!"}], template=template)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any, NoReturn

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pullweights.errors import FormatError

if TYPE_CHECKING:
    from loaders.tokenizer import Tokenizer

__all__ = [
    "CHATML_TEMPLATE",
    "GEMMA_TEMPLATE",
    "chat_template_from_metadata",
    "default_chat_template",
    "encode_chat",
    "render_chat",
]

CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
"""ChatML, the fallback format: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message,
then ``<|im_start|>assistant\\n`` when a reply is wanted. llama.cpp falls back to it too."""

GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] | trim + '\\n\\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)
"""Gemma's turn format (the text part of Gemma 3's template): the system message opens the
first user turn, "assistant" is called "model", turns end with ``<end_of_turn>``."""

_GEMMA_FAMILY = ("gemma", "gemma2", "gemma3", "gemma3n")


def default_chat_template(architecture: str | None) -> str:
    """The template used when a GGUF file has none: Gemma's format or ChatML.

    Args:
        architecture: ``general.architecture`` of the model (``"gemma3"``, ``"qwen2"``...).
    """
    if architecture in _GEMMA_FAMILY:
        return GEMMA_TEMPLATE
    return CHATML_TEMPLATE


def chat_template_from_metadata(meta: Mapping[str, object]) -> str:
    """``tokenizer.chat_template`` of a GGUF file, or :func:`default_chat_template`."""
    template = meta.get("tokenizer.chat_template")
    if isinstance(template, str) and template.strip():
        return template
    architecture = meta.get("general.architecture")
    return default_chat_template(architecture if isinstance(architecture, str) else None)


def render_chat(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
    **extra: Any,
) -> str:
    """Render ``messages`` with a Hugging Face-style Jinja chat template.

    Args:
        template: the Jinja source (``tokenizer.chat_template``).
        messages: ``{"role": ..., "content": ...}`` mappings, oldest first.
        add_generation_prompt: end with the header of an assistant turn.
        bos_token, eos_token: the texts the template may insert (``<bos>``, ``<|im_end|>``).
        extra: more template variables (``tools``, ``documents``...).

    Returns:
        The prompt text. If it starts with the BOS text, tokenize it without adding another
        BOS (:func:`encode_chat` does this).

    Raises:
        FormatError: the template does not parse, fails while rendering, or calls
            ``raise_exception`` (roles out of order, an unsupported role...).

    Example::

        render_chat(template, [{"role": "user", "content": "Hi"}], bos_token="<bos>")
    """
    compiled = _compile(template)
    try:
        return compiled.render(
            messages=[dict(m) for m in messages],
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
            **extra,
        )
    except FormatError:
        raise
    except jinja2.TemplateError as exc:
        raise FormatError(f"chat template failed while rendering: {exc}") from exc
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise FormatError(
            f"chat template failed while rendering: {type(exc).__name__}: {exc}"
        ) from exc


def encode_chat(
    tokenizer: Tokenizer,
    messages: Sequence[Mapping[str, Any]],
    *,
    template: str,
    add_generation_prompt: bool = True,
    **extra: Any,
) -> list[int]:
    """Render ``messages`` and tokenize the prompt, with exactly one BOS where the model wants it.

    Special tokens written by the template (``<start_of_turn>``, ``<|im_start|>``) become their
    ids. A BOS rendered by the template is not doubled by the tokenizer's own BOS.
    """
    bos_text = tokenizer.id_to_token(tokenizer.bos_id) if tokenizer.bos_id is not None else ""
    eos_text = tokenizer.id_to_token(tokenizer.eos_id) if tokenizer.eos_id is not None else ""
    text = render_chat(
        template,
        messages,
        add_generation_prompt=add_generation_prompt,
        bos_token=bos_text,
        eos_token=eos_text,
        **extra,
    )
    ids = tokenizer.encode(text, add_special=True, parse_special=True)
    bos = tokenizer.bos_id
    if tokenizer.add_bos and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
        del ids[0]
    return ids


def _raise_exception(message: str) -> NoReturn:
    raise FormatError(f"chat template refused the conversation: {message}")


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, sort_keys: bool = False
) -> str:
    # transformers' override: no HTML escaping, non-ASCII kept, optional indent.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


@cache
def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[jinja2.ext.loopcontrols],
        undefined=jinja2.Undefined,
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@cache
def _compile(template: str) -> jinja2.Template:
    try:
        return _environment().from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        raise FormatError(
            f"chat template does not parse: {exc.message} (line {exc.lineno})"
        ) from exc
