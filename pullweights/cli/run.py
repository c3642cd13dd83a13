"""``pullweights run [MODEL...] PROMPT``: load a GGUF LLM and stream a completion.

MODEL is a path, several part paths in order, an installed model name or a URL; without
it the gemma3 demo model is opened from its installed part files. The text streams to
stdout; a closing report on stderr gives load time, time to first token, prefill and
decode speed, peak RSS, peak private (anonymous) memory and weight-cache hits.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from pullweights.cli.progress import load_progress_bar
from pullweights.gguf.installed import installed_model_names
from pullweights.gguf.reader import open_gguf
from pullweights.memstats import MemoryMonitor
from pullweights.runtime.context import POLICIES, create_context

__all__ = ["DEFAULT_MODEL", "add_parser", "run"]

DEFAULT_MODEL = "gemma3-270m"
MB = 1024 * 1024


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``run`` on the ``pullweights`` command line."""
    parser = subparsers.add_parser(
        "run",
        help="generate text with a GGUF language model (llama, qwen2, gemma3)",
        description=(
            "Load a GGUF language model and stream a completion of PROMPT. MODEL is a path, "
            "several part paths in order, a URL, or an installed model name "
            f"({', '.join(installed_model_names())}); default: {DEFAULT_MODEL}."
        ),
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="[MODEL ...] PROMPT", help="model (optional), then prompt"
    )
    parser.add_argument("--chat", action="store_true", help="wrap PROMPT in the chat template")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens to generate")
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
    parser.add_argument("--top-k", type=int, default=0, help="keep the k best tokens (0: all)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus probability mass")
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None, help="seed of the sampler")
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    parser.add_argument("--context", type=int, default=None, help="KV cache length (default 4096)")
    parser.add_argument("--policy", choices=POLICIES, default="default", help="compute policy")
    parser.add_argument(
        "--accuracy-level",
        type=int,
        choices=range(5),
        default=None,
        help="MatMulNBits accuracy level (default 4: int8 activations; 0: exact)",
    )
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--no-cache", action="store_true", help="do not use the weight cache")
    cache.add_argument("--cache-dir", default=None, help="weight cache directory")
    parser.add_argument("--no-progress", action="store_true", help="no loading progress bar")
    parser.add_argument(
        "--offline", action="store_true", help="no network: a URL must have been pulled before"
    )
    parser.add_argument("--quiet", action="store_true", help="no closing report")
    parser.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    """Load the model, stream the completion to stdout, report to stderr.

    Raises:
        PullWeightsError: the model cannot be loaded, or the prompt does not fit.
    """
    from loaders import GenerationStats, SamplingParams, generate, load_model

    inputs: list[str] = list(args.inputs)
    from pullweights.cli.chat import chat, is_model_spec, model_spec

    if all(is_model_spec(text) for text in inputs):  # a model and no prompt: chat
        return await chat(model_spec(inputs), args)
    prompt = inputs.pop()
    model: str | list[str] = inputs if len(inputs) > 1 else (inputs or [DEFAULT_MODEL])[0]
    params = SamplingParams(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        max_tokens=args.max_tokens,
        stop=list(args.stop),
    )
    cache_dir: Any = None if args.no_cache else (args.cache_dir or "default")
    context = create_context(args.policy, cache_dir=cache_dir)
    monitor = MemoryMonitor()
    with monitor:
        start = time.perf_counter()
        bar, progress = load_progress_bar(not args.no_progress and sys.stderr.isatty())
        try:
            remote_dir = None if context.cache_dir is None else context.cache_dir / "remote"
            async with await open_gguf(model, remote_dir=remote_dir, offline=args.offline) as gguf:
                llm = await load_model(
                    gguf,
                    context=context,
                    context_length=args.context,
                    accuracy_level=args.accuracy_level,
                    progress=progress,
                )
                if context.cache is not None and isinstance(model, str):
                    context.cache.register_model(gguf.source, name=model)  # for `cache list`
        finally:
            if bar is not None:
                bar.close()
        load_seconds = time.perf_counter() - start
        stats = GenerationStats()
        async for text in generate(llm, prompt, params, chat=args.chat, stats=stats):
            sys.stdout.write(text)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
    if not args.quiet:
        load = llm.stats
        lines = [
            f"model: {model if isinstance(model, str) else ' '.join(model)} "
            f"({llm.config.arch}, {llm.config.n_layers} layers, context {llm.context})",
            f"load: {load_seconds:.2f} s; weight cache hits: {load.cache_hits}/"
            f"{load.transformed} transformed weights"
            + ("" if context.cache_dir is None else f" ({context.cache_dir})"),
            f"prompt: {stats.prompt_tokens} tokens; time to first token "
            f"{stats.time_to_first_token * 1000:.0f} ms; prefill "
            f"{stats.prefill_tokens_per_second:.1f} tok/s",
            f"generated: {stats.generated_tokens} tokens ({stats.stop_reason}); decode "
            f"{stats.decode_tokens_per_second:.1f} tok/s",
            f"memory: peak RSS {monitor.peak_rss / MB:.0f} MiB; peak private "
            f"{monitor.peak_anonymous / MB:.0f} MiB",
        ]
        print("\n".join(lines), file=sys.stderr)
    return 0
