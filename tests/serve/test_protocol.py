"""Request checking and model naming of the server, without a server."""

from __future__ import annotations

from typing import Any

import pytest

from pullweights.serve.protocol import ApiError, parse_body, parse_chat, parse_completion
from pullweights.serve.registry import parse_model_arg

CHAT = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
PARTS = [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]
IMAGE = [{"role": "user", "content": [{"type": "image_url"}]}]


def test_chat_defaults_follow_openai() -> None:
    request = parse_chat(CHAT)
    assert request.temperature == 1.0 and request.top_p == 1.0
    assert request.max_tokens is None and request.logprobs is None and not request.stream
    assert request.prompt == [{"role": "user", "content": "Hi"}]


def test_chat_fields() -> None:
    request = parse_chat(
        {
            **CHAT,
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
                },
                {"role": "assistant", "content": None},
            ],
            "max_completion_tokens": 7,
            "stop": "END",
            "seed": 3,
            "logprobs": True,
            "top_logprobs": 2,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    assert [m["role"] for m in request.prompt] == ["system", "user", "assistant"]  # type: ignore[index]
    assert request.prompt[1] == {"role": "user", "content": "AB"}
    assert request.max_tokens == 7 and request.stop == ["END"] and request.seed == 3
    assert request.logprobs == 2 and request.stream and request.include_usage


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"model": ""}, "model"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content",
        ),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 2.5}, "max_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [1]}, "stop"),
        ({"n": 2}, "n"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"stream": "yes"}, "stream"),
    ],
)
def test_chat_refusals_name_the_field(change: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as error:
        parse_chat({**CHAT, **change})
    assert error.value.status == 400
    assert error.value.param == param
    assert error.value.body()["error"]["type"] == "invalid_request_error"


def test_completion_prompts() -> None:
    assert parse_completion({"model": "m", "prompt": "Hi"}).prompt == "Hi"
    assert parse_completion({"model": "m", "prompt": ["Hi"]}).prompt == "Hi"
    assert parse_completion({"model": "m", "prompt": [1, 2, 3]}).prompt == [1, 2, 3]
    assert parse_completion({"model": "m", "prompt": "Hi"}).max_tokens == 16  # OpenAI's default
    for bad in ("", [], ["a", "b"], [1, "a"], None):
        with pytest.raises(ApiError, match="prompt"):
            parse_completion({"model": "m", "prompt": bad})
    with pytest.raises(ApiError, match="echo"):
        parse_completion({"model": "m", "prompt": "Hi", "echo": True})
    with pytest.raises(ApiError, match="logprobs"):
        parse_completion({"model": "m", "prompt": "Hi", "logprobs": 6})


def test_bodies() -> None:
    assert parse_body(b'{"a": 1}') == {"a": 1}
    for raw in (b"{", b"[]", b"\xff", b"3"):
        with pytest.raises(ApiError) as error:
            parse_body(raw)
        assert error.value.code == "invalid_json"


def test_model_names() -> None:
    assert parse_model_arg("gemma3-270m") == ("gemma3-270m", "gemma3-270m")
    assert parse_model_arg("models/tiny.gguf") == ("tiny", "models/tiny.gguf")
    assert parse_model_arg("chat=models/tiny.gguf") == ("chat", "models/tiny.gguf")
    assert parse_model_arg("big=a.part0,a.part1") == ("big", ["a.part0", "a.part1"])
    assert parse_model_arg("http://host/m/qwen.gguf") == ("qwen", "http://host/m/qwen.gguf")
