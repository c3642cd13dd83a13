"""The profiled process of a bench baseline: onnxruntime, llama.cpp or transformers alone.

``PYTHON baseline_worker.py REQUEST.json`` — run by path, with the Python that has the
runtime under test (llama.cpp's lives in its own virtualenv). It imports only the
standard library, numpy and that runtime, never pullweights, so a baseline pays for
nothing of pullweights; it writes its ``load`` span, ``ready`` and ``first-token`` marks
itself, in the format of :mod:`pullweights.events`, to ``$PULLWEIGHTS_EVENTS``.

The request: ``{"runtime": "ort" | "llamacpp" | "transformers", "model": PATH,
"prompt_ids": [...], "threads": N, "context": N}``. Each loads the model, then runs the
prompt once from an empty cache and picks the greedy first token.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

_ids = itertools.count(1)


@contextlib.contextmanager
def _span(phase: str, name: str) -> Iterator[None]:
    span = next(_ids)
    _emit(phase, "begin", name, span)
    ok = False
    try:
        yield
        ok = True
    finally:
        _emit(phase, "end", name, span, ok)


def _emit(phase: str, kind: str, name: str = "", span: int = 0, ok: bool = True) -> None:
    path = os.environ.get("PULLWEIGHTS_EVENTS")
    if not path:
        return
    event = {
        "phase": phase, "kind": kind, "name": name, "nbytes": 0, "time": time.monotonic(),
        "span": span, "stage": "", "ok": ok, "pid": os.getpid(),
    }  # fmt: skip
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(event, separators=(",", ":")) + "\n")


Prompt = Callable[[], int]


def _ort(request: dict[str, Any]) -> Prompt:
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(request["threads"])
    session = ort.InferenceSession(request["model"], options, ["CPUExecutionProvider"])

    def run() -> int:
        ids = np.asarray(request["prompt_ids"], dtype=np.int64)
        n = int(ids.size)
        feeds: dict[str, Any] = {
            "input_ids": ids,
            "logits_index": np.array([n - 1], np.int64),
            "seqlens_k": np.array([n - 1], np.int32),
            "total_sequence_length": np.array(n, np.int32),
        }
        for arg in session.get_inputs():
            if arg.name.startswith("past_"):  # symbolic dims: the cache length
                shape = [d if isinstance(d, int) else int(request["context"]) for d in arg.shape]
                feeds[arg.name] = np.zeros(shape, np.float32)
        (logits,) = session.run(["logits"], feeds)
        return int(np.argmax(logits[-1]))

    return run


def _llamacpp(request: dict[str, Any]) -> Prompt:
    import llama_cpp
    import numpy as np

    threads = int(request["threads"])
    llm = llama_cpp.Llama(
        request["model"], n_ctx=int(request["context"]), n_threads=threads,
        n_threads_batch=threads, verbose=False,
    )  # fmt: skip

    def run() -> int:
        llm.eval([int(t) for t in request["prompt_ids"]])
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
        return int(np.argmax(logits))

    return run


def _transformers(request: dict[str, Any]) -> Prompt:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(int(request["threads"]))
    path = request["model"]
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path)
    )

    def run() -> int:
        with torch.no_grad():
            logits = model(torch.tensor([request["prompt_ids"]])).logits
        return int(logits[0, -1].argmax())

    return run


RUNTIMES = {"ort": _ort, "llamacpp": _llamacpp, "transformers": _transformers}


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        request = json.load(f)
    name = request["runtime"]
    with _span("load", name):
        prompt = RUNTIMES[name](request)
    _emit("ready", "mark", name)
    with _span("prefill", name):
        token = prompt()
        _emit("first-token", "mark", name)
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
