"""llama.cpp (llama-cpp-python) side of ``bench_chat``; runs in llama.cpp's own venv.

``<llamacpp-venv>/bin/python benchmarks/llamacpp_chat_worker.py REQUEST.json`` imports only
``llama_cpp`` and the standard library (never pullweights). It loads the model, then:

Chats are rendered with the request's ``chat_template`` (Jinja, as llama-cpp-python renders
a GGUF's own template).

* ``turns``: a chat of the request's ``questions`` after its ``system`` message, each
  answered with ``create_chat_completion(stream=True)`` (greedy, ``max_tokens``) and its
  reply kept in the history; llama-cpp-python reuses the longest cached prefix of each new
  prompt. Recorded per turn: time to the first streamed text, streamed pieces, the reply.
* ``streams``: the ``streams`` prompts answered one after the other, streaming. One
  ``Llama`` holds one sequence, and llama-cpp-python's own server takes a lock per
  request, so this is how it serves that many concurrent requests. Recorded: streamed
  pieces (one per token, but for a character split across tokens) and wall time.

Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def _stream(llm: Any, messages: list[dict[str, str]], max_tokens: int) -> tuple[float, str, int]:
    """``(time to first text, text, pieces)`` of one streamed greedy answer."""
    start = time.perf_counter()
    first = 0.0
    pieces: list[str] = []
    for chunk in llm.create_chat_completion(
        messages, max_tokens=max_tokens, temperature=0.0, stream=True
    ):
        text = chunk["choices"][0]["delta"].get("content")
        if text:
            if not pieces:
                first = time.perf_counter() - start
            pieces.append(text)
    return first, "".join(pieces), len(pieces)


def main(request: dict[str, Any]) -> None:
    import llama_cpp  # only present in llama.cpp's venv

    start = time.perf_counter()
    threads = int(request["n_threads"])
    llm = llama_cpp.Llama(
        request["model"],
        n_ctx=int(request["n_ctx"]),
        n_batch=512,
        n_ubatch=512,
        n_threads=threads,
        n_threads_batch=threads,
        flash_attn=False,
        verbose=False,
        chat_handler=_handler(llama_cpp, request),
    )
    load_s = time.perf_counter() - start
    messages = [{"role": "system", "content": request["system"]}]
    turns = []
    for question in request["questions"]:
        messages.append({"role": "user", "content": question})
        ttft, text, pieces = _stream(llm, messages, int(request["max_tokens"]))
        messages.append({"role": "assistant", "content": text})
        turns.append({"ttft_s": ttft, "pieces": pieces, "reply": text})
    start = time.perf_counter()
    total = 0
    for prompt in request["stream_prompts"]:
        answer = _stream(llm, [{"role": "user", "content": prompt}], int(request["stream_tokens"]))
        total += answer[2]
    streams = {"tokens": total, "seconds": time.perf_counter() - start}
    print(json.dumps({"load_s": load_s, "turns": turns, "streams": streams}))


def _handler(llama_cpp: Any, request: dict[str, Any]) -> Any:
    """A chat handler rendering the request's ``chat_template`` (the GGUF's own, or the
    one pullweights falls back to when the file has none: llama-cpp-python would fall
    back to llama-2's format and drop Gemma's system message)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(
        request["chat_template"], eos_token=request["eos_text"], bos_token=request["bos_text"]
    )
    return formatter.to_chat_handler()


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        main(json.load(f))
