"""Cost of bounded chat-template rendering (:mod:`loaders.chat_sandbox`) on real templates.

For each template (Qwen2.5-Coder's ``tokenizer.chat_template`` from the installed model
when the ``qwen`` extra is installed, Gemma's and ChatML's built-in ones) and conversations
of 2, 20 and 200 messages (Qwen's also with two tool definitions), this renders with:

* ``plain``: Jinja's ``ImmutableSandboxedEnvironment`` as transformers uses it (no bounds);
* ``bounded``: :func:`loaders.chat.render_chat` (time, step, depth and size limits);

and prints the median time per render, the ratio, and the steps one render takes (the
budget is ``RenderLimits.max_steps``). Both produce the same text (checked).

    python -m benchmarks.bench_chat_render [--reps 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loaders.chat import CHATML_TEMPLATE, GEMMA_TEMPLATE, render_chat  # noqa: E402
from loaders.chat_sandbox import RenderLimits, bounded  # noqa: E402

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": f"tool_{i}",
            "description": "Look something up " * 5,
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string", "description": "what to find"}},
                "required": ["query"],
            },
        },
    }
    for i in range(2)
]


def conversation(n: int) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": "You are a helpful assistant."}]
    for i in range(n - 1):
        role = "user" if i % 2 == 0 else "assistant"
        messages.append({"role": role, "content": f"Message {i}: " + "some words " * 20})
    return messages


def qwen_template() -> str | None:
    try:
        from pullweights.gguf import open_gguf

        async def read() -> object:
            async with await open_gguf("qwen2.5-coder-0.5b") as gguf:
                return gguf.metadata.get("tokenizer.chat_template")

        template = asyncio.run(read())
    except Exception as exc:  # the qwen extra is not installed
        print(f"(qwen2 template skipped: {exc})")
        return None
    return template if isinstance(template, str) else None


def plain_renderer(template: str) -> Callable[..., str]:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = lambda v, ensure_ascii=False, indent=None, sort_keys=False: json.dumps(
        v, ensure_ascii=ensure_ascii, indent=indent, sort_keys=sort_keys
    )
    env.globals["raise_exception"] = lambda m: (_ for _ in ()).throw(ValueError(m))
    compiled = env.from_string(template)
    return compiled.render


def median_seconds(func: Callable[[], object], reps: int) -> float:
    func()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def steps_of(template: str, variables: dict[str, Any]) -> int:
    limits = RenderLimits()
    with bounded(limits) as budget:
        from loaders.chat import _compile, _environment

        compiled = _compile(template, "bench")
        "".join(_environment().render_bounded(compiled, variables))
    return budget.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=50)
    args = parser.parse_args()
    templates = {"gemma (built-in)": GEMMA_TEMPLATE, "chatml (built-in)": CHATML_TEMPLATE}
    qwen = qwen_template()
    if qwen is not None:
        templates = {"qwen2.5-coder (file)": qwen, **templates}
    print("| template | messages | tools | plain | bounded | ratio | steps |")
    print("|---|---|---|---|---|---|---|")
    for name, template in templates.items():
        plain = plain_renderer(template)
        for n in (2, 20, 200):
            for tools in [None, TOOLS] if template is qwen else [None]:
                variables: dict[str, Any] = {
                    "messages": conversation(n) if "gemma" not in name else conversation(n)[1:],
                    "add_generation_prompt": True,
                    "bos_token": "<bos>",
                    "eos_token": "",
                }
                if tools is not None:
                    variables["tools"] = tools
                a = plain(**variables)
                b = render_chat(template, **variables)
                assert a == b, (name, n)
                t_plain = median_seconds(lambda v=variables, f=plain: f(**v), args.reps)
                t_bounded = median_seconds(
                    lambda v=variables, t=template: render_chat(t, **v), args.reps
                )
                steps = steps_of(template, variables)
                print(
                    f"| {name} | {n} | {'2' if tools else '-'} | {t_plain * 1e3:.3f} ms | "
                    f"{t_bounded * 1e3:.3f} ms | {t_bounded / t_plain:.1f}x | {steps} |"
                )


if __name__ == "__main__":
    main()
