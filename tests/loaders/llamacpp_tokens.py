"""Dump llama.cpp's token ids for a fixed prompt set (a development script, not a test).

Run with the llama-cpp-python virtualenv on assembled copies of the two test models::

    /work/llamacpp-venv/bin/python tests/loaders/llamacpp_tokens.py \\
        --gemma3 /tmp/gemma3.gguf --qwen /tmp/qwen.gguf

It writes ``tests/loaders/data/expected_tokens.json``, which ``test_tokenizer_llamacpp.py``
compares our tokenizer with. For every model and prompt it records llama.cpp's ids with and
without special handling (``add_special``/``parse_special`` both true, both false), the text
llama.cpp decodes them back to, and the model's end-of-generation ids; and a few conversations
rendered by llama.cpp's built-in chat formats.
"""

from __future__ import annotations

import argparse
import ctypes
import json
from pathlib import Path
from typing import Any

PROMPTS = [
    "Hello world",
    "Hello, world! How are you today?",
    " leading space",
    "   three leading spaces",
    "trailing spaces   ",
    "multiple   spaces    inside  text",
    "line one\nline two\n\nline four\n\n\n",
    "\ttabbed\t\tline",
    "def fibonacci(n):\n    if n < 2:\n        return n\n"
    "    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    'for (int i = 0; i < 10; ++i) { printf("%d\\n", i); }',
    "import numpy as np\nx = np.arange(12).reshape(3, 4)  # comment",
    "The year 2024 had 366 days; pi is 3.14159265358979.",
    "1234567890 12 123 1,000,000",
    "Prices: €5, £3, ¥100, $2.50",
    "Emoji: 😀🎉👍🏽 and 👨‍👩‍👧‍👦",
    "日本語のテキストです。中文文本。한국어 텍스트.",
    "Ünïcödé àccents: naïve café résumé Straße",
    "Русский текст и ελληνικά",
    "مرحبا بالعالم",
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n",
    "<bos>text after a literal bos",
    "<|endoftext|>",
    "I'm sure you'll see they've done it; it's what we'd do.",
    "CamelCaseIdentifier snake_case_identifier kebab-case",
    "https://example.com/path?query=1&other=two#frag",
    "<table><tr><td>cell</td></tr></table>",
    "a\u200bzero\u00a0width and nbsp",
    "\n\nStarts with newlines",
    "",
    "x" * 50 + " " + "ab" * 20,
    "🤖",
    "\u0000control\u0007chars\u001b[0m",
]


CONVERSATIONS: list[list[dict[str, str]]] = [
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi!"}],
    [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "  And of Italy?\n"},
    ],
    [{"role": "user", "content": "Write a haiku about 日本 🌸"}],
]
"""Conversations rendered by llama.cpp's built-in chat formats (Gemma's, and ChatML for Qwen,
which llama.cpp recognises from the file's template)."""


def _render_chat(llama_cpp: Any, template: str, messages: list[dict[str, str]], add: bool) -> str:
    """llama.cpp's ``llama_chat_apply_template`` on ``messages``."""
    keep = [(m["role"].encode(), m["content"].encode()) for m in messages]
    chat = (llama_cpp.llama_chat_message * len(keep))(
        *(llama_cpp.llama_chat_message(role=r, content=c) for r, c in keep)
    )
    size = 4096
    buffer = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_chat_apply_template(template.encode(), chat, len(keep), add, buffer, size)
    if n < 0 or n > size:
        raise RuntimeError(f"llama_chat_apply_template returned {n}")
    return buffer.raw[:n].decode()


def _detokenize(llama_cpp: Any, vocab: Any, ids: list[int]) -> str:
    """llama.cpp's own detokenizer (``Llama.detokenize`` drops pieces over 32 bytes)."""
    array = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
    size = 64 + 64 * len(ids)
    buffer = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_detokenize(vocab, array, len(ids), buffer, size, True, False)
    if n < 0:
        raise RuntimeError(f"detokenize needs {-n} bytes")
    return buffer.raw[:n].decode("utf-8", errors="replace")


def main() -> None:
    """Parse arguments and write the JSON file."""
    import llama_cpp

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gemma3", type=Path, required=True)
    parser.add_argument("--qwen", type=Path, required=True)
    default_out = Path(__file__).parent / "data" / "expected_tokens.json"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()

    result: dict[str, object] = {"llama_cpp_version": llama_cpp.__version__, "models": {}}
    models: dict[str, object] = {}
    for name, path in (("gemma3", args.gemma3), ("qwen2", args.qwen)):
        llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        template = llm.metadata.get("tokenizer.chat_template", "gemma")
        chats = [
            {
                "messages": conversation,
                "add_generation_prompt": add,
                "rendered": _render_chat(llama_cpp, template, conversation, add),
            }
            for conversation in CONVERSATIONS
            for add in (True, False)
        ]
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        eog = [i for i in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, i)]
        cases = []
        for prompt in PROMPTS:
            data = prompt.encode()
            special = llm.tokenize(data, add_bos=True, special=True)
            plain = llm.tokenize(data, add_bos=False, special=False)
            decoded = _detokenize(llama_cpp, vocab, plain)
            cases.append({"text": prompt, "special": special, "plain": plain, "decoded": decoded})
        models[name] = {"eog_ids": eog, "n_vocab": n_vocab, "cases": cases, "chats": chats}
        del llm
    result["models"] = models
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
