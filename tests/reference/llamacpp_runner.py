"""Run llama.cpp (llama-cpp-python) on a GGUF file; a script for llama.cpp's own venv.

Run as ``<llamacpp-venv>/bin/python llamacpp_runner.py REQUESTS.json`` (one request or a
list of them): it imports only
``llama_cpp``, ``numpy`` and the standard library (never pullweights or this package),
so the comparison in ``test_reference.py`` stays independent.

Request keys: ``model`` (path), ``out`` (.npz path), ``tokens`` (list of ids) or
``prompt`` (text, tokenized by llama.cpp with the file's add_bos), ``f32_kv`` (bool: keep
the KV cache in float32 rather than float16), ``n_ctx``. The .npz gets ``tokens``,
``logits`` (float32, every position) and ``pieces`` (the detokenized text of each token).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

GGML_TYPE_F32 = 0


def run(request: dict[str, Any]) -> None:
    """Evaluate the request's tokens and save every position's logits."""
    import llama_cpp  # only present in llama.cpp's venv

    kv: dict[str, Any] = (
        {"type_k": GGML_TYPE_F32, "type_v": GGML_TYPE_F32} if request.get("f32_kv", True) else {}
    )
    llm = llama_cpp.Llama(
        request["model"],
        n_ctx=int(request.get("n_ctx", 256)),
        n_batch=512,
        n_threads=int(request.get("n_threads", 2)),
        logits_all=True,
        flash_attn=False,
        verbose=False,
        **kv,
    )
    if "tokens" in request:
        tokens = [int(t) for t in request["tokens"]]
    else:
        tokens = llm.tokenize(request["prompt"].encode(), add_bos=True, special=False)
    llm.eval(tokens)
    logits = np.array(llm.scores[: len(tokens)], dtype=np.float32)
    pieces = [llm.detokenize([t]).decode("utf-8", errors="replace") for t in tokens]
    np.savez(
        request["out"],
        tokens=np.array(tokens, dtype=np.int64),
        logits=logits,
        pieces=np.array(pieces),
    )


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        requests = json.load(f)
    for one in requests if isinstance(requests, list) else [requests]:
        run(one)
