"""Chat prompts: a conversation rendered with the model's Jinja chat template.

GGUF files carry the Hugging Face chat template in ``tokenizer.chat_template``; it is rendered
the way ``transformers`` renders it (sandboxed Jinja, ``trim_blocks`` and ``lstrip_blocks``,
``raise_exception``, ``tojson``, ``strftime_now``, loop controls). A file without a template
gets :func:`default_chat_template`: Gemma's turn format for the Gemma family, ChatML for
everything else.

A template comes from the model file, so it is treated as hostile: it is compiled and
rendered in a :class:`~loaders.chat_sandbox.BoundedEnvironment` under
:class:`~loaders.chat_sandbox.RenderLimits` (time, steps, nesting, value and output sizes),
and whatever goes wrong ends in one :class:`~pullweights.errors.FormatError` naming the
template.

Example::

    template = chat_template_from_metadata(gguf.metadata)
    ids = encode_chat(tokenizer, [{"role": "user", "content": "Hi!"}], template=template)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any, NoReturn

import jinja2
import jinja2.ext

from loaders.chat_sandbox import BoundedEnvironment, LimitExceeded, RenderLimits, bounded, text_size
from pullweights.errors import FormatError

if TYPE_CHECKING:
    from loaders.tokenizer import Tokenizer

__all__ = [
    "CHATML_TEMPLATE",
    "GEMMA_TEMPLATE",
    "RenderLimits",
    "chat_template_from_metadata",
    "chat_template_name",
    "default_chat_template",
    "default_limits",
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


def chat_template_name(meta: Mapping[str, object]) -> str:
    """How errors name the template :func:`chat_template_from_metadata` returns."""
    template = meta.get("tokenizer.chat_template")
    model = meta.get("general.name")
    of = f" of {model!r}" if isinstance(model, str) and model else ""
    if isinstance(template, str) and template.strip():
        return f"chat template (tokenizer.chat_template{of})"
    return f"default chat template{of}"


def default_limits(*inputs: object) -> RenderLimits:
    """:class:`RenderLimits` whose size limits leave room for ``inputs`` (the messages and
    extra variables): at least 4 Mi characters, and four times the inputs' size."""
    base = RenderLimits()
    room = 4 * text_size(inputs, 1 << 40)
    return RenderLimits(
        max_output_chars=max(base.max_output_chars, room),
        max_value_chars=max(base.max_value_chars, room),
    )


def render_chat(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
    name: str = "chat template",
    limits: RenderLimits | None = None,
    **extra: Any,
) -> str:
    """Render ``messages`` with a Hugging Face-style Jinja chat template, within limits.

    Args:
        template: the Jinja source (``tokenizer.chat_template``).
        messages: ``{"role": ..., "content": ...}`` mappings, oldest first.
        add_generation_prompt: end with the header of an assistant turn.
        bos_token, eos_token: the texts the template may insert (``<bos>``, ``<|im_end|>``).
        name: how error messages name the template.
        limits: what compiling and rendering may cost (default :func:`default_limits`
            of the messages and ``extra``).
        extra: more template variables (``tools``, ``documents``...).

    Returns:
        The prompt text. If it starts with the BOS text, tokenize it without adding another
        BOS (:func:`encode_chat` does this).

    Raises:
        FormatError: the template does not parse, fails while rendering (any error, e.g.
            a division by zero), goes past a limit (time, steps, nesting, sizes), or calls
            ``raise_exception`` (roles out of order, an unsupported role...). The message
            starts with ``name``.

    Example::

        render_chat(template, [{"role": "user", "content": "Hi"}], bos_token="<bos>")
    """
    variables = {
        "messages": [dict(m) for m in messages],
        "add_generation_prompt": add_generation_prompt,
        "bos_token": bos_token,
        "eos_token": eos_token,
        **extra,
    }
    limits = limits or default_limits(variables)
    if not isinstance(template, str):
        raise FormatError(f"{name} must be a string, got {type(template).__name__}")
    if len(template) > limits.max_template_chars:
        raise FormatError(
            f"{name} has {len(template)} characters (limit {limits.max_template_chars})"
        )
    compiled = _compile(template, name)
    try:
        with bounded(limits):
            return "".join(_environment().render_bounded(compiled, variables))
    except LimitExceeded as exc:
        raise FormatError(f"{name}: rendering stopped: {exc}") from None
    except FormatError as exc:
        raise FormatError(f"{name}: {exc}") from exc
    except jinja2.TemplateError as exc:
        raise FormatError(f"{name} failed while rendering: {exc}") from exc
    except (Exception, RecursionError) as exc:
        raise FormatError(f"{name} failed while rendering: {type(exc).__name__}: {exc}") from exc


def encode_chat(
    tokenizer: Tokenizer,
    messages: Sequence[Mapping[str, Any]],
    *,
    template: str,
    add_generation_prompt: bool = True,
    name: str = "chat template",
    max_chars: int | None = None,
    **extra: Any,
) -> list[int]:
    """Render ``messages`` and tokenize the prompt, with exactly one BOS where the model wants it.

    Special tokens written by the template (``<start_of_turn>``, ``<|im_start|>``) become their
    ids. A BOS rendered by the template is not doubled by the tokenizer's own BOS.

    ``max_chars`` bounds the rendered text handed to the tokenizer (default
    :data:`~loaders.tokenizer.MAX_ENCODE_CHARS`).

    Raises:
        FormatError: the template fails (see :func:`render_chat`).
        ComputeError: the rendered prompt is longer than ``max_chars``.
    """
    bos_text = tokenizer.id_to_token(tokenizer.bos_id) if tokenizer.bos_id is not None else ""
    eos_text = tokenizer.id_to_token(tokenizer.eos_id) if tokenizer.eos_id is not None else ""
    text = render_chat(
        template,
        messages,
        add_generation_prompt=add_generation_prompt,
        bos_token=bos_text,
        eos_token=eos_text,
        name=name,
        **extra,
    )
    if max_chars is None:
        ids = tokenizer.encode(text, add_special=True, parse_special=True)
    else:
        ids = tokenizer.encode(text, add_special=True, parse_special=True, max_chars=max_chars)
    bos = tokenizer.bos_id
    if tokenizer.add_bos and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
        del ids[0]
    return ids


def _raise_exception(message: str) -> NoReturn:
    raise FormatError(f"the template refused the conversation: {message}")


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


@cache
def _environment() -> BoundedEnvironment:
    env = BoundedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[jinja2.ext.loopcontrols],
        undefined=jinja2.Undefined,
    )
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@lru_cache(maxsize=16)
def _compile(template: str, name: str) -> jinja2.Template:
    """The compiled template (compiling is bounded by the default limits' time and steps)."""
    try:
        with bounded(RenderLimits()):
            return _environment().from_string(template)
    except LimitExceeded as exc:
        raise FormatError(f"{name}: compiling stopped: {exc}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise FormatError(f"{name} does not parse: {exc.message} (line {exc.lineno})") from exc
    except (Exception, RecursionError) as exc:  # Python's compiler: nesting, memory
        raise FormatError(f"{name} does not compile: {type(exc).__name__}: {exc}") from exc
