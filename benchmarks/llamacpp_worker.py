"""llama.cpp (llama-cpp-python) side of the LLM comparisons; runs in llama.cpp's own venv.

``<llamacpp-venv>/bin/python benchmarks/llamacpp_worker.py REQUEST.json`` imports only
``llama_cpp``, ``numpy`` and the standard library (never pullweights), so the comparison
stays independent. The request's ``mode``:

* ``"logits"``: evaluate each token list of ``prompts`` from an empty cache with
  ``logits_all=True`` and save every position's logits to ``out`` (.npz, ``p0``, ``p1``...);
* ``"bench"``: time the load, then ``repeats`` times a prefill of ``prompt`` and
  ``decode`` greedy single-token steps; print one JSON line with the timings, peak RSS
  (VmHWM) and peak private (anonymous) memory sampled every 10 ms.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import numpy as np

GGML_TYPE_F32 = 0


def _read_kb(path: str, key: str) -> int:
    with open(path, encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


class _PeakAnonymous:
    """Samples ``RssAnon`` of /proc/self/status in a thread; keeps the maximum.

    Not ``smaps_rollup``: reading it every 10 ms cost llama.cpp 15-30% of its decode and
    prefill speed here (it walks every mapping and stalls the process's page faults); the
    status line is the same number (pullweights' MemoryMonitor reads it too)."""

    def __init__(self) -> None:
        self.peak = _read_kb("/proc/self/status", "RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _read_kb("/proc/self/status", "RssAnon"))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _read_kb("/proc/self/status", "RssAnon"))
        return self.peak


def _load(request: dict[str, Any], logits_all: bool) -> Any:
    import llama_cpp  # only present in llama.cpp's venv

    kv: dict[str, Any] = (
        {"type_k": GGML_TYPE_F32, "type_v": GGML_TYPE_F32} if request.get("f32_kv") else {}
    )
    return llama_cpp.Llama(
        request["model"],
        n_ctx=int(request.get("n_ctx", 2048)),
        n_batch=512,
        n_ubatch=512,
        n_threads=int(request.get("n_threads", 2)),
        n_threads_batch=int(request.get("n_threads", 2)),
        logits_all=logits_all,
        flash_attn=False,
        verbose=False,
        **kv,
    )


def _last_argmax(llm: Any) -> int:
    """Greedy next token: the last evaluated position's logits (``logits_all=False``)."""
    last = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
    return int(np.argmax(last))


def logits(request: dict[str, Any]) -> None:
    """Every position's logits of every prompt, each from an empty cache."""
    llm = _load(request, logits_all=True)
    arrays: dict[str, np.ndarray] = {}
    for i, tokens in enumerate(request["prompts"]):
        llm.reset()
        llm.eval([int(t) for t in tokens])
        arrays[f"p{i}"] = np.array(llm.scores[: len(tokens)], dtype=np.float32)
    np.savez(request["out"], **arrays)  # type: ignore[arg-type]


def bench(request: dict[str, Any]) -> None:
    """Load, then ``repeats`` x (prefill + greedy decode); print the timings as JSON."""
    monitor = _PeakAnonymous()
    start = time.perf_counter()
    llm = _load(request, logits_all=False)
    load_s = time.perf_counter() - start
    prompt = [int(t) for t in request["prompt"]]
    runs = []
    for _ in range(int(request.get("repeats", 3))):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        token = _last_argmax(llm)
        t1 = time.perf_counter()
        for _ in range(int(request["decode"])):
            llm.eval([token])
            token = _last_argmax(llm)
        t2 = time.perf_counter()
        runs.append({"prefill_s": t1 - t0, "decode_s": t2 - t1})
    peak_anon = monitor.stop()
    result = {
        "load_s": load_s,
        "runs": runs,
        "peak_rss": _read_kb("/proc/self/status", "VmHWM"),
        "peak_private": peak_anon,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        req = json.load(f)
    {"logits": logits, "bench": bench}[req["mode"]](req)
