"""Chat and serving speed: pullweights vs llama-cpp-python on the same GGUF, side by side.

Two measurements, each in fresh processes per runtime (alternating order per repetition):

* **Turns**: a chat with a long system prompt (``--system-tokens``, ~600) and ``--turns``
  questions, greedy, ``--max-tokens`` per answer, each answer kept in the history. The time
  to the first streamed text of every turn; from turn 2 on both runtimes reuse the cached
  prefix (pullweights: :class:`loaders.conversation.Conversation` over a KV cache slot;
  llama.cpp: ``create_chat_completion``, which keeps its last prompt's cache).
* **Streams**: ``--streams`` different requests of ``--stream-tokens`` each, tokens per
  second summed over all of them (total tokens / wall time until the last ends).
  pullweights: one at a time and all at once (``slots=streams``), in-process, and all at
  once as streaming requests to ``pullweights serve --slots N`` from the ``openai`` client
  (needs the ``test`` extra). llama-cpp-python: one at a time — one ``Llama`` holds one
  sequence, and its server takes a lock per request.

    python -m benchmarks.bench_chat --model qwen2.5-coder-0.5b [--repeats 3]

pullweights loads with a warm weight cache (filled by an uncounted first run), int8
activations (the default); both use ``--threads`` threads. JSON goes to
``benchmarks/results/chat.json`` (one entry per model).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.compare_llamacpp import LLAMACPP_PYTHON, RESULTS, assembled_gguf

CHAT_WORKER = Path(__file__).with_name("llamacpp_chat_worker.py")

RULES = [
    "You are a careful assistant for a team of engineers who maintain a large codebase.",
    "Answer in plain English, in short paragraphs, and say so when you are not sure.",
    "When you show code, use Python unless the question names another language.",
    "Prefer small functions with clear names, type hints and docstrings over clever tricks.",
    "Never invent an API: if a library function may not exist, say how to check it.",
    "Point out security problems such as injection, unsafe deserialization or leaked secrets.",
    "Explain the cost of an approach in time and memory when it matters for the answer.",
    "If a question is ambiguous, state the reading you chose before you answer it.",
    "Keep a friendly, direct tone; do not repeat the question back to the user.",
    "Use metric units, ISO dates and twenty-four hour times in every answer.",
]
QUESTIONS = [
    "How do I read a large CSV file without loading it all into memory?",
    "And how would I compute the mean of one column while reading it that way?",
    "What changes if the file is compressed with gzip?",
    "Summarise the three answers in two sentences.",
]
STREAM_PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a hash map works, step by step.",
    "Describe a walk through a forest in autumn.",
    "List ten ideas for a small weekend programming project.",
    "Write a letter to a friend about a trip to the mountains.",
    "Explain what a compiler does, for a beginner.",
    "Describe the water cycle.",
    "Write a recipe for a vegetable soup.",
]


def chat_setup(model: str, tokens: int) -> dict[str, str]:
    """The system prompt (:data:`RULES` repeated, numbered, until it has about ``tokens``
    tokens) and the chat template with its BOS/EOS texts, for both runtimes."""

    async def build() -> dict[str, str]:
        from loaders.chat import chat_template_from_metadata
        from loaders.tokenizer import Tokenizer
        from pullweights.gguf.reader import open_gguf

        async with await open_gguf(model) as gguf:
            tokenizer = Tokenizer.from_gguf_metadata(gguf.metadata)
            template = chat_template_from_metadata(gguf.metadata)
        lines: list[str] = []
        while len(tokenizer.encode("\n".join(lines), add_special=False)) < tokens:
            lines.append(f"{len(lines) + 1}. {RULES[len(lines) % len(RULES)]}")
        special = {"bos_text": tokenizer.bos_id, "eos_text": tokenizer.eos_id}
        return {
            "system": "\n".join(lines),
            "chat_template": template,
            **{k: "" if i is None else tokenizer.id_to_token(i) for k, i in special.items()},
        }

    return asyncio.run(build())


async def pullweights_worker(request: dict[str, Any]) -> dict[str, Any]:
    """The pullweights side of one process: load, the chat turns, the streams."""
    from loaders import GenerationStats, SamplingParams, generate, load_model
    from loaders.conversation import Conversation
    from pullweights.runtime.context import create_context

    start = time.perf_counter()
    context = create_context(
        cache_dir=request["cache_dir"], intra_op_threads=int(request["n_threads"])
    )
    model = await load_model(
        request["model"],
        context=context,
        context_length=request["n_ctx"],
        slots=len(request["stream_prompts"]),
    )
    load_s = time.perf_counter() - start
    chat = Conversation(
        model, system=request["system"], params=SamplingParams(max_tokens=request["max_tokens"])
    )
    turns = []
    for question in request["questions"]:
        stats = GenerationStats()
        t0 = time.perf_counter()
        first = None
        async for _ in chat.send(question, stats=stats):
            first = first or time.perf_counter() - t0  # the first text, as llama.cpp's
        turns.append(
            {
                "ttft_s": first,
                "prompt_tokens": stats.prompt_tokens,
                "cached_tokens": stats.cached_tokens,
                "generated": stats.generated_tokens,
            }
        )
    params = SamplingParams(max_tokens=request["stream_tokens"])

    async def answer(prompt: str) -> int:
        stats = GenerationStats()
        async for _ in generate(model, [{"role": "user", "content": prompt}], params, stats=stats):
            pass
        return stats.generated_tokens

    streams: dict[str, Any] = {}
    for mode in ("serial", "concurrent"):
        model.slots.reset()  # no prompt of the first mode cached for the second
        t0 = time.perf_counter()
        if mode == "serial":
            counts = [await answer(p) for p in request["stream_prompts"]]
        else:
            counts = list(await asyncio.gather(*(answer(p) for p in request["stream_prompts"])))
        streams[mode] = {"tokens": sum(counts), "seconds": time.perf_counter() - t0}
    return {"load_s": load_s, "turns": turns, "streams": streams}


def run_worker(method: str, request: dict[str, Any]) -> dict[str, Any]:
    """One fresh process of ``method``; returns its JSON result."""
    with tempfile.TemporaryDirectory(prefix="pw-bench-chat-") as tmp:
        path = Path(tmp, "request.json")
        if method == "pullweights":
            path.write_text(json.dumps(request))
            cmd = [sys.executable, "-m", "benchmarks.bench_chat", "--worker", str(path)]
        else:
            path.write_text(json.dumps({**request, "model": request["gguf"]}))
            cmd = [LLAMACPP_PYTHON, str(CHAT_WORKER), str(path)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return result


def server_streams(request: dict[str, Any]) -> dict[str, Any] | None:
    """All stream prompts at once as streaming requests to ``pullweights serve``."""
    try:
        import openai
    except ImportError:
        print("openai is not installed (test extra): no server measurement", file=sys.stderr)
        return None
    from tests.serve.server_process import ServerProcess

    slots = str(len(request["stream_prompts"]))
    args = [f"bench={request['model']}", "--slots", slots, "--context", str(request["n_ctx"])]
    args += ["--cache-dir", request["cache_dir"], "--threads", str(request["n_threads"])]

    async def run(url: str) -> dict[str, Any]:
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="-", max_retries=0) as client:

            async def one(prompt: str) -> int:
                stream = await client.chat.completions.create(
                    model="bench",
                    messages=[{"role": "user", "content": prompt}],
                    max_tokens=request["stream_tokens"],
                    temperature=0,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                tokens = 0
                async for chunk in stream:
                    if chunk.usage is not None:
                        tokens = chunk.usage.completion_tokens
                return tokens

            await one("Hello")  # onnxruntime's first runs, as the in-process worker had them
            t0 = time.perf_counter()
            counts = await asyncio.gather(*(one(p) for p in request["stream_prompts"]))
            return {"tokens": sum(counts), "seconds": time.perf_counter() - t0}

    with ServerProcess(*args) as server:
        return asyncio.run(run(server.url))


def tokens_per_second(run: dict[str, Any]) -> float:
    return float(run["tokens"] / run["seconds"])


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    turns = len(results[0]["turns"])
    summary: dict[str, Any] = {
        "processes": len(results),
        "load_s": statistics.median(r["load_s"] for r in results),
        "ttft_s_by_turn": [
            statistics.median(r["turns"][t]["ttft_s"] for r in results) for t in range(turns)
        ],
    }
    summary["ttft_s_turns_2_on"] = statistics.median(
        r["turns"][t]["ttft_s"] for r in results for t in range(1, turns)
    )
    streams = results[0]["streams"]
    if "tokens" in streams:  # llama.cpp: one at a time
        summary["streams_tokens_per_s"] = statistics.median(
            tokens_per_second(r["streams"]) for r in results
        )
    else:
        for mode in streams:
            summary[f"streams_{mode}_tokens_per_s"] = statistics.median(
                tokens_per_second(r["streams"][mode]) for r in results
            )
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--system-tokens", type=int, default=600)
    parser.add_argument("--turns", type=int, default=4, help=f"at most {len(QUESTIONS)}")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per chat answer")
    parser.add_argument("--streams", type=int, default=4, help=f"at most {len(STREAM_PROMPTS)}")
    parser.add_argument("--stream-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="processes per runtime")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--no-server", action="store_true", help="skip pullweights serve")
    parser.add_argument("--gguf-dir", default="/tmp")
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "pullweights"))
    parser.add_argument("--out", default=str(RESULTS / "chat.json"))
    args = parser.parse_args()
    if args.worker:
        request = json.loads(Path(args.worker).read_text())
        print(json.dumps(asyncio.run(pullweights_worker(request))))
        return 0

    request = {
        "model": args.model,
        "gguf": str(assembled_gguf(args.model, Path(args.gguf_dir))),
        **chat_setup(args.model, args.system_tokens),
        "questions": QUESTIONS[: args.turns],
        "max_tokens": args.max_tokens,
        "stream_prompts": STREAM_PROMPTS[: args.streams],
        "stream_tokens": args.stream_tokens,
        "n_ctx": args.context,
        "n_threads": args.threads,
        "cache_dir": args.cache_dir,
    }
    warm = run_worker("pullweights", request)  # fills the weight cache; not counted
    print(f"warm-up: load {warm['load_s']:.1f} s", file=sys.stderr)
    results: dict[str, list[dict[str, Any]]] = {"pullweights": [], "llama.cpp": []}
    for rep in range(args.repeats):
        order = ["pullweights", "llama.cpp"] if rep % 2 == 0 else ["llama.cpp", "pullweights"]
        for method in order:
            result = run_worker(method, request)
            results[method].append(result)
            ttft = ", ".join(f"{t['ttft_s'] * 1000:.0f}" for t in result["turns"])
            print(f"rep {rep} {method}: time to first token by turn (ms) {ttft}", file=sys.stderr)
    summary = {m: summarize(r) for m, r in results.items()}
    served = None if args.no_server else server_streams(request)
    if served is not None:
        summary["pullweights"]["streams_server_tokens_per_s"] = tokens_per_second(served)
    pw, ll = summary["pullweights"], summary["llama.cpp"]
    best = pw.get("streams_server_tokens_per_s", pw["streams_concurrent_tokens_per_s"])
    reference = ll["streams_tokens_per_s"] or float("nan")  # nan: llama.cpp wrote nothing
    entry = {
        "setup": {
            **{k: v for k, v in request.items() if k not in ("system", "chat_template")},
            "system_tokens": warm["turns"][0]["prompt_tokens"],
            "date": time.strftime("%Y-%m-%d %H:%M"),
        },
        "summary": summary,
        "ratios": {
            "ttft_turns_2_on_pullweights_over_llamacpp": pw["ttft_s_turns_2_on"]
            / ll["ttft_s_turns_2_on"],
            "streams_pullweights_over_llamacpp": best / reference,
            "streams_concurrent_over_serial_pullweights": pw["streams_concurrent_tokens_per_s"]
            / pw["streams_serial_tokens_per_s"],
        },
        "raw": {**results, "server": served},
    }
    out = Path(args.out)
    everything = json.loads(out.read_text()) if out.exists() else {}
    everything[args.model] = entry
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(everything, indent=2) + "\n")
    print(json.dumps({"summary": summary, "ratios": entry["ratios"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
