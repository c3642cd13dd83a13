"""Chat template rendering (tiny templates; the real models' templates are compared with
llama.cpp in ``test_tokenizer_llamacpp.py``)."""

from __future__ import annotations

import pytest

from loaders.chat import (
    CHATML_TEMPLATE,
    GEMMA_TEMPLATE,
    chat_template_from_metadata,
    default_chat_template,
    encode_chat,
    render_chat,
)
from loaders.tokenizer import Tokenizer
from pullweights.errors import FormatError
from tests.loaders.vocabularies import bpe_metadata, spm_metadata

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": " Hi "},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Bye"},
]

TINY = """\
{{ bos_token }}
{% for m in messages %}
    {% if m.role == 'secret' %}{{ raise_exception('no secrets: ' + m.content) }}{% endif %}
    [{{ m.role }}] {{ m.content | trim }}{{ eos_token }}
{% endfor %}
{% if add_generation_prompt %}[assistant]{% endif %}"""


def test_trim_blocks_and_lstrip_blocks() -> None:
    text = render_chat(
        TINY, CONVERSATION[1:3], add_generation_prompt=True, bos_token="<s>", eos_token="</s>"
    )
    # Block tags take their newline and indentation with them, as in transformers.
    assert text == "<s>\n    [user] Hi</s>\n    [assistant] Hello.</s>\n[assistant]"
    no_prompt = render_chat(TINY, CONVERSATION[1:2], add_generation_prompt=False)
    assert no_prompt == "\n    [user] Hi\n"


def test_raise_exception_and_errors() -> None:
    with pytest.raises(FormatError, match="refused the conversation: no secrets: x"):
        render_chat(TINY, [{"role": "secret", "content": "x"}])
    with pytest.raises(FormatError, match="does not parse"):
        render_chat("{% for m in messages %}", CONVERSATION)
    with pytest.raises(FormatError, match="failed while rendering"):
        render_chat("{{ messages[0]['content'] + 1 }}", CONVERSATION)


def test_sandbox_blocks_unsafe_access() -> None:
    with pytest.raises(FormatError, match="failed while rendering"):
        render_chat("{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}", [])
    with pytest.raises(FormatError):
        render_chat("{% set _ = messages.append(1) %}", [])  # immutable sandbox


def test_tojson_and_extra_variables() -> None:
    template = "{{ tools | tojson }}|{{ tools | tojson(indent=1) }}"
    text = render_chat(template, [], tools=[{"name": "é<x>"}])
    assert text == '[{"name": "é<x>"}]|[\n {\n  "name": "é<x>"\n }\n]'


def test_chatml_fallback() -> None:
    text = render_chat(CHATML_TEMPLATE, CONVERSATION[:2])
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n Hi <|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_gemma_fallback() -> None:
    text = render_chat(GEMMA_TEMPLATE, CONVERSATION, bos_token="<bos>")
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    with pytest.raises(FormatError, match="roles must alternate"):
        render_chat(GEMMA_TEMPLATE, [CONVERSATION[1], CONVERSATION[1]])


def test_template_from_metadata() -> None:
    assert chat_template_from_metadata({"tokenizer.chat_template": TINY}) == TINY
    assert chat_template_from_metadata({"general.architecture": "gemma3"}) == GEMMA_TEMPLATE
    assert chat_template_from_metadata({"general.architecture": "qwen2"}) == CHATML_TEMPLATE
    assert default_chat_template(None) == CHATML_TEMPLATE


def test_encode_chat_has_one_bos() -> None:
    tokenizer = Tokenizer.from_gguf_metadata(spm_metadata())
    ids = encode_chat(tokenizer, CONVERSATION[1:2], template=GEMMA_TEMPLATE)
    start, end = tokenizer.token_to_id("<start_of_turn>"), tokenizer.token_to_id("<end_of_turn>")
    assert ids[:2] == [tokenizer.bos_id, start]
    assert ids[1:].count(ids[0]) == 0 and end in ids
    bpe = Tokenizer.from_gguf_metadata(bpe_metadata())
    ids = encode_chat(bpe, CONVERSATION[1:2], template=CHATML_TEMPLATE)
    assert ids[0] == bpe.token_to_id("<|im_start|>")
    assert bpe.decode(ids, skip_special=False) == render_chat(CHATML_TEMPLATE, CONVERSATION[1:2])
