"""Our tokenizers and chat rendering against llama.cpp on the two real models.

``data/expected_tokens.json`` holds llama.cpp's (llama-cpp-python 0.3.36) ids for a fixed set
of prompts in two modes — BOS added and special tokens parsed, and neither — its decoding of
the plain ids, its end-of-generation ids and its built-in chat formats' renderings. Regenerate
it with ``tests/loaders/llamacpp_tokens.py``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from loaders.chat import chat_template_from_metadata, encode_chat, render_chat
from loaders.tokenizer import Tokenizer

pytestmark = pytest.mark.model

MODELS = ["gemma3", "qwen2"]

DEFAULT_QWEN_SYSTEM = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. "
    "You are a helpful assistant.<|im_end|>\n"
)


def _model(expected: dict[str, Any], key: str) -> dict[str, Any]:
    model: dict[str, Any] = expected["models"][key]
    return model


@pytest.mark.parametrize("key", MODELS)
def test_ids_match_llamacpp(
    key: str, model_tokenizers: dict[str, Tokenizer], llamacpp_expected: dict[str, Any]
) -> None:
    tokenizer = model_tokenizers[key]
    model = _model(llamacpp_expected, key)
    assert tokenizer.vocab_size == model["n_vocab"]
    mismatches = []
    total = 0
    for case in model["cases"]:
        for mode, special in (("special", True), ("plain", False)):
            total += 1
            got = tokenizer.encode(case["text"], add_special=special, parse_special=special)
            if got != case[mode]:
                mismatches.append((mode, case["text"], got, case[mode]))
    agreement = 100 * (total - len(mismatches)) / total
    print(f"{key}: {total - len(mismatches)}/{total} prompts identical ({agreement:.1f}%)")
    assert not mismatches, mismatches


@pytest.mark.parametrize("key", MODELS)
def test_decode_matches_llamacpp(
    key: str, model_tokenizers: dict[str, Tokenizer], llamacpp_expected: dict[str, Any]
) -> None:
    tokenizer = model_tokenizers[key]
    for case in _model(llamacpp_expected, key)["cases"]:
        assert tokenizer.decode(case["plain"]) == case["decoded"], case["text"]
        stream = tokenizer.stream()
        streamed = "".join(stream.push(i) for i in case["plain"]) + stream.flush()
        assert streamed == case["decoded"], case["text"]
        plain = tokenizer.encode(case["text"], parse_special=False)
        assert tokenizer.decode(plain) == case["text"]


@pytest.mark.parametrize("key", MODELS)
def test_end_of_generation_ids(
    key: str, model_tokenizers: dict[str, Tokenizer], llamacpp_expected: dict[str, Any]
) -> None:
    tokenizer = model_tokenizers[key]
    expected = set(_model(llamacpp_expected, key)["eog_ids"])
    # llama.cpp also stops on "</s>" (added for PaddleOCR); here it is HTML / plain text.
    expected -= {i for i in expected if tokenizer.id_to_token(i) == "</s>"}
    assert tokenizer.eog_ids == expected
    named = {"gemma3": ["<eos>", "<end_of_turn>"], "qwen2": ["<|endoftext|>", "<|im_end|>"]}
    for text in named[key]:
        token_id = tokenizer.token_to_id(text)
        assert token_id is not None and tokenizer.is_eog(token_id)


@pytest.mark.slow
def test_build_time(model_metadata: dict[str, dict[str, object]]) -> None:
    start = time.perf_counter()
    Tokenizer.from_gguf_metadata(model_metadata["gemma3"])
    elapsed = time.perf_counter() - start
    print(f"gemma3 tokenizer (262,144 entries) built in {elapsed:.2f} s")
    assert elapsed < 8.0  # ~1 s on a quiet 2-core machine; generous for a loaded one


@pytest.mark.parametrize("key", MODELS)
def test_chat_matches_llamacpp(
    key: str,
    model_metadata: dict[str, dict[str, object]],
    model_tokenizers: dict[str, Tokenizer],
    llamacpp_expected: dict[str, Any],
) -> None:
    meta = model_metadata[key]
    tokenizer = model_tokenizers[key]
    template = chat_template_from_metadata(meta)
    for chat in _model(llamacpp_expected, key)["chats"]:
        messages = chat["messages"]
        add = chat["add_generation_prompt"]
        ours = render_chat(template, messages, add_generation_prompt=add, bos_token="<bos>")
        expected = chat["rendered"]
        if key == "gemma3":
            expected = "<bos>" + expected  # our template writes BOS, llama.cpp's tokenizer adds it
        elif messages[0]["role"] != "system":
            expected = DEFAULT_QWEN_SYSTEM + expected  # Qwen's template adds its own
        assert ours == expected
        ids = encode_chat(tokenizer, messages, template=template, add_generation_prompt=add)
        bos = [tokenizer.bos_id] if tokenizer.add_bos else []
        assert ids == bos + tokenizer.encode(ours.removeprefix("<bos>"), add_special=False)


def test_qwen_template_with_tools(model_metadata: dict[str, dict[str, object]]) -> None:
    template = chat_template_from_metadata(model_metadata["qwen2"])
    tool = {"type": "function", "function": {"name": "get_time", "parameters": {}}}
    call = {"function": {"name": "get_time", "arguments": {"tz": "UTC"}}}
    messages = [
        {"role": "user", "content": "Time?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "12:00"},
    ]
    text = render_chat(template, messages, tools=[tool])
    assert '<tools>\n{"type": "function", "function": {"name": "get_time"' in text
    assert '<tool_call>\n{"name": "get_time", "arguments": {"tz": "UTC"}}\n</tool_call>' in text
    assert text.endswith(
        "<|im_start|>user\n<tool_response>\n12:00\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
