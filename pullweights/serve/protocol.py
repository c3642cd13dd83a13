"""The OpenAI request bodies the server accepts, checked field by field, and its errors.

:func:`parse_chat` and :func:`parse_completion` turn a decoded JSON body into a
:class:`GenerationRequest` or raise :class:`ApiError` naming the field (``param``), as the
OpenAI API does::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens",
               "code": "invalid_value"}}

Fields that change nothing here (``user``, ``metadata``, ``store``...) are ignored; fields
asking for something this server does not do (``n`` > 1, ``tools``, non-zero penalties,
``echo``) are refused rather than silently ignored. ``temperature`` defaults to 1 and
``top_p`` to 1, as in the OpenAI API; ``top_k`` and ``repetition_penalty`` are accepted as
extensions (llama.cpp's server takes them too).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = [
    "ApiError",
    "GenerationRequest",
    "error_response",
    "parse_body",
    "parse_chat",
    "parse_completion",
]

MAX_STOP = 4
MAX_TOP_LOGPROBS = 20
MAX_COMPLETION_LOGPROBS = 5


class ApiError(Exception):
    """A request the server refuses, answered with an OpenAI-style error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type

    def body(self) -> dict[str, Any]:
        """``{"error": {"message", "type", "param", "code"}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def error_response(error: ApiError) -> web.Response:
    """``error`` as a JSON response with its status."""
    return web.json_response(error.body(), status=error.status)


@dataclass(frozen=True)
class GenerationRequest:
    """What a chat or completion request asks for, checked.

    ``prompt`` is chat messages (chat) or a text / token ids (completion); ``max_tokens``
    ``None`` means as many as the context leaves. ``logprobs`` is the number of
    alternatives per token to report (``None``: no log probabilities at all).
    """

    model: str
    prompt: str | list[int] | list[dict[str, str]]
    chat: bool
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body.

    Raises:
        ApiError: the body is not JSON, or not an object.
    """
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(
            400, f"the request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    return body


def parse_chat(body: Mapping[str, Any]) -> GenerationRequest:
    """A ``/v1/chat/completions`` body.

    Raises:
        ApiError: a missing or invalid field (named in ``param``).
    """
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty array", param="messages")
    _refuse(body, ("tools", "functions"), lambda v: v not in (None, []))
    _refuse(body, ("tool_choice", "function_call"), lambda v: v not in (None, "none", "auto"))
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type", "text") != "text"):
        raise ApiError(
            400, "only response_format {'type': 'text'} is supported", param="response_format"
        )
    logprobs = _bool(body, "logprobs", False)
    top = _int(body, "top_logprobs", None, 0, MAX_TOP_LOGPROBS)
    if top is not None and not logprobs:
        raise ApiError(400, "'top_logprobs' needs 'logprobs': true", param="top_logprobs")
    max_tokens = _int(body, "max_completion_tokens", None, 1)
    if max_tokens is None:
        max_tokens = _int(body, "max_tokens", None, 1)
    return GenerationRequest(
        prompt=[_message(m, i) for i, m in enumerate(messages)],
        chat=True,
        logprobs=(top or 0) if logprobs else None,
        max_tokens=max_tokens,
        **_common(body),
    )


def parse_completion(body: Mapping[str, Any]) -> GenerationRequest:
    """A ``/v1/completions`` body (``prompt``: a string, token ids, or a list of one).

    Raises:
        ApiError: a missing or invalid field (named in ``param``).
    """
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt):
        text: str | list[int] = [int(t) for t in prompt]
    elif isinstance(prompt, str) and prompt:
        text = prompt
    else:
        raise ApiError(
            400,
            "'prompt' must be a non-empty string or array of token ids (one prompt per request)",
            param="prompt",
        )
    _refuse(body, ("echo",), lambda v: v not in (None, False))
    _refuse(body, ("suffix",), lambda v: v not in (None, ""))
    _int(body, "best_of", None, 1, 1)
    return GenerationRequest(
        prompt=text,
        chat=False,
        logprobs=_int(body, "logprobs", None, 0, MAX_COMPLETION_LOGPROBS),
        max_tokens=_int(body, "max_tokens", 16, 1),
        **_common(body),
    )


def _common(body: Mapping[str, Any]) -> dict[str, Any]:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' must be a non-empty string", param="model")
    _int(body, "n", None, 1, 1)
    for name in ("presence_penalty", "frequency_penalty"):
        if _number(body, name, 0.0, -2.0, 2.0) != 0.0:
            raise ApiError(400, f"'{name}' is not supported (use 0)", param=name)
    if body.get("logit_bias") not in (None, {}):
        raise ApiError(400, "'logit_bias' is not supported", param="logit_bias")
    stream = _bool(body, "stream", False)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ApiError(400, "'stream_options' must be an object", param="stream_options")
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0.0:
        raise ApiError(400, "'top_p' must be > 0", param="top_p", code="invalid_value")
    return {
        "model": model,
        "stream": stream,
        "include_usage": bool(options and options.get("include_usage")),
        "temperature": _number(body, "temperature", 1.0, 0.0, 2.0),
        "top_p": top_p,
        "top_k": _int(body, "top_k", 0, 0),
        "repetition_penalty": _number(body, "repetition_penalty", 1.0, 1e-3, 100.0),
        "seed": _int(body, "seed", None),
        "stop": _stop(body.get("stop")),
    }


def _message(message: object, index: int) -> dict[str, str]:
    param = f"messages[{index}]"
    if not isinstance(message, dict):
        raise ApiError(400, f"{param} must be an object", param=param)
    role = message.get("role")
    if role not in ("system", "developer", "user", "assistant"):
        raise ApiError(
            400,
            f"{param}.role must be 'system', 'developer', 'user' or 'assistant', got {role!r}",
            param=f"{param}.role",
        )
    return {"role": "system" if role == "developer" else role, "content": _content(message, param)}


def _content(message: Mapping[str, Any], param: str) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if content is None and message.get("role") == "assistant":
        return ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise ApiError(
                    400, f"{param}.content: only text parts are supported", param=f"{param}.content"
                )
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise ApiError(
        400, f"{param}.content must be a string or an array of text parts", param=f"{param}.content"
    )


def _stop(value: object) -> list[str]:
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if (
        not isinstance(stops, list)
        or len(stops) > MAX_STOP
        or not all(isinstance(s, str) for s in stops)
    ):
        raise ApiError(400, f"'stop' must be a string or up to {MAX_STOP} strings", param="stop")
    return [s for s in stops if s]


def _refuse(body: Mapping[str, Any], names: Sequence[str], given: Any) -> None:
    for name in names:
        if name in body and given(body[name]):
            raise ApiError(400, f"'{name}' is not supported by this server", param=name)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bool(body: Mapping[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"'{name}' must be a boolean", param=name)
    return value


def _int(
    body: Mapping[str, Any],
    name: str,
    default: int | None,
    low: int | None = None,
    high: int | None = None,
) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if not _is_int(value):
        raise ApiError(400, f"'{name}' must be an integer, got {value!r}", param=name)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise ApiError(
            400, f"'{name}' must be {bounds}, got {value}", param=name, code="invalid_value"
        )
    return int(value)


def _number(body: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(400, f"'{name}' must be a number, got {value!r}", param=name)
    if not low <= value <= high:
        raise ApiError(
            400,
            f"'{name}' must be between {low:g} and {high:g}, got {value}",
            param=name,
            code="invalid_value",
        )
    return float(value)
