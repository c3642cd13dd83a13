"""The fuzzer's child process: runs inputs one at a time and reports each outcome.

Started by :mod:`tests.fuzz.harness` with an address-space limit (``RLIMIT_AS``); reads
one JSON job per line on stdin and writes one JSON answer per line on the file
descriptor ``--answer-fd`` (stdout stays free for what the CLI prints). A job names a
GGUF file and how to drive it:

* ``tiny`` (a tiny model with real weights): ``pullweights inspect --metadata``, then
  ``pullweights run FILE Hello --max-tokens 3`` (with ``--chat`` when the job says so)
  through the CLI's own ``main``;
* ``header`` (a real model's header over a hole of zeros): ``inspect``, then the loaders'
  metadata path without compiling: config, the tensor checks, the tokenizer and the chat
  template rendered and tokenized.

Outcomes: ``ok`` (with the text printed), ``error`` (the CLI's one-line pullweights error
or a ``PullWeightsError``), ``traceback`` (any other exception escaped), ``memory`` (a
``MemoryError`` escaped). The peak RSS of the input (``VmHWM`` after resetting it) and
any warning raised are reported too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import resource
import sys
import traceback
import warnings
from typing import Any


def _peak_reset() -> None:
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS


def _peak_rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _cli(argv: list[str]) -> tuple[int, str, str]:
    from pullweights.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


async def _metadata_path(path: str) -> str:
    """What loading does with the metadata before compiling anything."""
    from loaders import architecture_for
    from loaders.chat import chat_template_from_metadata, chat_template_name, encode_chat
    from loaders.tokenizer import Tokenizer
    from loaders.validate import check_tensors
    from pullweights.errors import FormatError
    from pullweights.gguf import open_gguf

    async with await open_gguf(path) as gguf:
        embedding = gguf.tensor("token_embd.weight")
        if len(embedding.shape) != 2:
            raise FormatError("token_embd.weight is not 2-D")
        config = architecture_for(gguf.architecture).config(gguf.metadata, embedding.shape[0])
        check_tensors(config, gguf.tensors, gguf.metadata)
        tokenizer = await asyncio.to_thread(Tokenizer.from_gguf_metadata, gguf.metadata)
        messages = [{"role": "user", "content": "Hello"}]
        ids = encode_chat(
            tokenizer,
            messages,
            template=chat_template_from_metadata(gguf.metadata),
            name=chat_template_name(gguf.metadata),
            max_chars=4096 * tokenizer.max_token_chars,
        )
        return " ".join(map(str, ids[:64]))


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    from pullweights.errors import PullWeightsError

    path, kind = job["path"], job["kind"]
    answer: dict[str, Any] = {"outcome": "ok", "text": ""}
    _peak_reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            rc, _, err = _cli(["inspect", path, "--metadata"])
            if rc != 0:
                answer = {"outcome": "error", "stage": "inspect", "detail": err.strip()[-300:]}
            elif kind == "tiny":
                argv = ["run", path, "Hello", "--max-tokens", "3", "--no-cache",
                        "--no-progress", "--quiet"]  # fmt: skip
                if job.get("chat", True):
                    argv.append("--chat")
                rc, out, err = _cli(argv)
                if rc != 0:
                    answer = {"outcome": "error", "stage": "run", "detail": err.strip()[-300:]}
                else:
                    answer["text"] = out
            else:
                answer["text"] = asyncio.run(_metadata_path(path))
        except PullWeightsError as exc:
            detail = f"{type(exc).__name__}: {exc}"[-300:]
            answer = {"outcome": "error", "stage": "loaders", "detail": detail}
        except MemoryError as exc:
            answer = {"outcome": "memory", "detail": f"MemoryError: {exc}"[:300]}
        except Exception as exc:
            frames = traceback.extract_tb(exc.__traceback__)
            where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
            answer = {"outcome": "traceback", "detail": f"{type(exc).__name__}: {exc}"[:300],
                      "where": where}  # fmt: skip
    answer["peak_rss"] = _peak_rss()
    answer["warnings"] = sorted({f"{w.category.__name__}: {w.message}"[:200] for w in caught})
    return answer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--answer-fd", type=int, required=True)
    parser.add_argument("--address-space", type=int, default=0, help="RLIMIT_AS bytes (0: none)")
    args = parser.parse_args()
    if args.address_space:
        resource.setrlimit(resource.RLIMIT_AS, (args.address_space, args.address_space))
    answers = os.fdopen(args.answer_fd, "w", buffering=1)
    import loaders  # noqa: F401  (import once, before the first job)
    import pullweights.cli  # noqa: F401

    answers.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        job = json.loads(line)
        answers.write(json.dumps(run_job(job)) + "\n")


if __name__ == "__main__":
    main()
