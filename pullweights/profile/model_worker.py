"""The profiled process of ``pullweights profile MODEL`` and of the bench's pullweights
scenarios: load a GGUF LLM, then greedily generate a few tokens of a prompt.

``python -m pullweights.profile.model_worker MODEL... (--prompt TEXT | --prompt-ids 1,2,3)``

The runtime and the loaders report the load and the generation themselves (header,
fetch / transform / cache-write, compile, save, tokenizer, ``ready`` for the graph and
the model, prefill, ``first-token``, ``generate``). The generated text goes to stdout;
a pullweights error is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from typing import Any

from pullweights.errors import PullWeightsError, SourceError
from pullweights.gguf.installed import (
    INSTALLED_MODELS,
    installed_model_names,
    installed_model_parts,
)

__all__ = ["check_model", "main", "worker_command"]


def check_model(parts: list[str]) -> None:
    """Fail early, in one line, for a model that names nothing.

    Raises:
        SourceError: not a URL, an existing file or an installed (and installed) model.
    """
    if len(parts) == 1 and re.match(r"https?://", parts[0]):
        return
    if len(parts) == 1 and parts[0] in INSTALLED_MODELS and not os.path.exists(parts[0]):
        installed_model_parts(parts[0])
        return
    for part in parts:
        if not os.path.isfile(part):
            raise SourceError(
                f"unknown model {part!r}: not a file, a URL or an installed model name "
                f"(known: {', '.join(installed_model_names())})"
            )


def worker_command(
    model: str | list[str],
    *,
    prompt: str | None = None,
    prompt_ids: list[int] | None = None,
    max_tokens: int = 8,
    cache_dir: str | None = "default",
    context: int | None = None,
    quiet: bool = False,
) -> list[str]:
    """The arguments (after ``python``) that run this worker."""
    args = [
        "-m",
        "pullweights.profile.model_worker",
        *([model] if isinstance(model, str) else model),
    ]
    if prompt_ids is not None:
        args += ["--prompt-ids", ",".join(str(i) for i in prompt_ids)]
    else:
        args += ["--prompt", prompt or ""]
    args += ["--max-tokens", str(max_tokens), "--cache-dir", cache_dir or "none"]
    if context is not None:
        args += ["--context", str(context)]
    if quiet:
        args.append("--quiet")
    return args


async def _run(args: argparse.Namespace) -> None:
    from loaders import SamplingParams, encode_prompt, generate_tokens, load_model
    from pullweights import create_context

    model: str | list[str] = args.model if len(args.model) > 1 else args.model[0]
    cache_dir: Any = None if args.cache_dir == "none" else args.cache_dir
    llm = await load_model(
        model, context=create_context(cache_dir=cache_dir), context_length=args.context
    )
    if args.prompt_ids is not None:
        ids = [int(t) for t in args.prompt_ids.split(",") if t.strip()]
    else:
        ids = encode_prompt(llm, args.prompt)
    decoder = llm.tokenizer.stream()
    # (the loaders emit the ``generate`` span around the generation)
    async for token in generate_tokens(llm, ids, SamplingParams(max_tokens=args.max_tokens)):
        if not args.quiet:
            sys.stdout.write(decoder.push(token))
            sys.stdout.flush()
    if not args.quiet:
        sys.stdout.write(decoder.flush() + "\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m pullweights.profile.model_worker")
    parser.add_argument("model", nargs="+")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--prompt")
    group.add_argument("--prompt-ids", help="comma-separated token ids")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--cache-dir", default="default", help='a directory, "default" or "none"')
    parser.add_argument("--context", type=int, default=None)
    parser.add_argument("--quiet", action="store_true", help="do not print the generated text")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_run(args))
    except PullWeightsError as exc:
        print(f"pullweights: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pullweights: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
