"""``pullweights run [MODEL ...] PROMPT``: load a GGUF LLM and stream a completion.

MODEL is a path, several part paths in order, an installed model name or a URL; without
it the gemma3 demo model is used (see :mod:`pullweights.cli.model_words` for how the
words are told apart); a MODEL without a PROMPT starts a chat (``pullweights chat``).
Options may stand anywhere. The text streams to stdout; a closing report
on stderr gives the sampling settings (with the seed), load time, time to first token,
prefill and decode speed, peak RSS, peak private (anonymous) memory and weight-cache hits.

Checked before any weight is pulled: ``--context`` above the model's training context is
capped (and said so), and a prompt longer than the context is refused, naming
``--context`` (:class:`loaders.LoadPlan`). Ctrl-C during generation ends the line, keeps
what was generated and prints the report (exit status 130).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, cast

from pullweights.cli.model_args import (
    DEFAULT_MODEL,
    add_load_arguments,
    add_sampling_arguments,
    context_from_args,
    describe_sampling,
    load_llm,
    sampling_from_args,
)
from pullweights.cli.model_words import ModelAndPrompt, split_model_and_prompt
from pullweights.cli.parsing import UsageError
from pullweights.cli.progress import LoadReporter
from pullweights.gguf.installed import installed_model_names
from pullweights.memstats import MemoryMonitor

if TYPE_CHECKING:
    from loaders import GenerationStats, LanguageModel, LoadPlan, SamplingParams

__all__ = ["DEFAULT_MODEL", "add_parser", "run"]

MB = 1024 * 1024

_DESCRIPTION = f"""\
Load a GGUF language model and stream a completion of PROMPT (options may stand anywhere).

MODEL is a path, several part paths in order, an http(s) URL, or an installed model name
({", ".join(installed_model_names())}). Without MODEL the demo model {DEFAULT_MODEL} is used
(Gemma 3 270M, a small *base* model: it continues text, it does not follow instructions).
A first word that names no file, URL or installed model is the prompt only when it contains
a space ("The capital of France is"); otherwise it is an error. Give a one-word prompt with
-p, and the model explicitly with -m. A MODEL without a PROMPT starts a chat with it
(pullweights chat).

Sampling defaults read well on small base models and are reproducible: temperature 0.7,
top-p 0.9, repetition penalty 1.1, seed 0 (printed in the report). --greedy picks the most
likely token every time (no repetition penalty unless given).
"""

_EXAMPLES = """\
examples:
  pullweights run "The capital of France is"
  pullweights run qwen2.5-coder-0.5b --chat "Write a haiku about memory"
  pullweights run --chat -m qwen2.5-coder-0.5b -p Hello
  pullweights run model.gguf "Once upon a time" --greedy --max-tokens 64
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``run`` on the ``pullweights`` command line."""
    parser = subparsers.add_parser(
        "run",
        help="generate text with a GGUF language model (llama, qwen2, gemma3)",
        usage="%(prog)s [options] [MODEL ...] PROMPT\n"
        "       %(prog)s [options] -m MODEL [-m PART ...] (PROMPT | -p PROMPT)",
        description=_DESCRIPTION,
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "words",
        nargs="*",
        metavar="[MODEL ...] PROMPT",
        help="the model (optional), then the prompt",
    )
    parser.add_argument(
        "-m",
        "--model",
        action="append",
        metavar="MODEL",
        help="the model (repeat for part files in order); every word is then the prompt",
    )
    parser.add_argument("-p", "--prompt", help="the prompt (any text, one word included)")
    parser.add_argument("--chat", action="store_true", help="wrap PROMPT in the chat template")
    add_sampling_arguments(parser, max_tokens=128)
    add_load_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress and no closing report")
    parser.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    """Load the model, stream the completion to stdout, report to stderr.

    Returns 0, or 130 when generation was interrupted (Ctrl-C).

    Raises:
        UsageError: the words name no model, no prompt, or the prompt does not fit.
        PullWeightsError: the model cannot be loaded.
    """
    from loaders import GenerationStats

    chosen = split_model_and_prompt(args.words, args.model, args.prompt)
    if chosen.prompt is None:  # a model and no prompt: chat with it
        from pullweights.cli.chat import chat

        return await chat(chosen.model, args)
    prompt = chosen.prompt
    params = sampling_from_args(args)
    context = context_from_args(args)
    monitor = MemoryMonitor()
    with monitor:
        start = time.perf_counter()

        async def check(plan: LoadPlan, reporter: LoadReporter) -> None:
            await _check_plan(plan, chosen.model_text, prompt, args, params, reporter)

        llm = await load_llm(chosen.model, args, context=context, check=check)
        load_seconds = time.perf_counter() - start
        stats = GenerationStats()
        interrupted = await _stream(llm, prompt, params, args.chat, stats)
    if not args.quiet:
        print(
            _report(chosen, llm, params, stats, load_seconds, monitor, context, interrupted),
            file=sys.stderr,
        )
    return 130 if interrupted else 0


async def _check_plan(
    plan: LoadPlan,
    name: str,
    prompt: str,
    args: argparse.Namespace,
    params: SamplingParams,
    reporter: LoadReporter,
) -> None:
    """Before any weight is pulled: refuse a prompt that does not fit (its tokens are
    counted only when its length could exceed the context)."""
    train = plan.config.train_context
    if plan.token_bound(prompt, chat=args.chat) <= plan.context_length:
        return
    n = len(await plan.encode(prompt, chat=args.chat))
    if n > train:
        raise UsageError(
            f"the prompt is {n} tokens, more than {name}'s training context of "
            f"{train} positions: shorten it"
        )
    if n > plan.context_length:
        wanted = min(train, _round_up(n + params.max_tokens, 256))
        which = "" if plan.requested_context is not None else " (the default)"
        most = "the most it takes" if wanted == train else f"at most {train}"
        raise UsageError(
            f"the prompt is {n} tokens; the context holds {plan.context_length}{which}: give "
            f"--context {wanted} ({most}: the model's training context) or a shorter prompt"
        )
    room = plan.context_length - n
    if room < params.max_tokens:
        reporter.note(
            f"the prompt is {n} tokens: --context {plan.context_length} leaves room for {room} "
            f"of the {params.max_tokens} tokens of --max-tokens"
        )


def _round_up(n: int, step: int) -> int:
    return (n + step - 1) // step * step


async def _stream(
    llm: LanguageModel, prompt: str, params: SamplingParams, chat: bool, stats: GenerationStats
) -> bool:
    """Stream the completion to stdout; True when Ctrl-C interrupted it (the line is ended
    and the text so far stays)."""
    from loaders import generate

    interrupted = False
    try:
        # Closed here, in this task, whatever ends the loop (a closed stdout, Ctrl-C): left
        # to the event loop's shutdown, the generator would be closed while it runs.
        pieces = cast(
            AsyncGenerator[str, None], generate(llm, prompt, params, chat=chat, stats=stats)
        )
        async with aclosing(pieces):
            async for text in pieces:
                sys.stdout.write(text)
                sys.stdout.flush()
    except asyncio.CancelledError:
        # asyncio.run turns the first Ctrl-C into a cancellation of this task: take it back
        # and end normally, so the report is printed.
        task = asyncio.current_task()
        if task is None or task.uncancel() > 0:
            raise
        interrupted = True
    sys.stdout.write("\n")
    sys.stdout.flush()
    return interrupted


def _report(
    chosen: ModelAndPrompt,
    llm: LanguageModel,
    params: SamplingParams,
    stats: GenerationStats,
    load_seconds: float,
    monitor: MemoryMonitor,
    context: Any,
    interrupted: bool,
) -> str:
    load = llm.stats
    reason = "interrupted" if interrupted else stats.stop_reason
    threads = context.intra_op_threads
    lines = [
        f"model: {chosen.model_text} ({llm.config.arch}, {llm.config.n_layers} layers, "
        f"context {llm.context}; {threads or 'default'} intra-op threads)",
        f"sampling: {describe_sampling(params)}",
        f"load: {load_seconds:.2f} s; weight cache hits: {load.cache_hits}/"
        f"{load.transformed} transformed weights"
        + ("" if context.cache_dir is None else f" ({context.cache_dir})"),
        f"prompt: {stats.prompt_tokens} tokens; time to first token "
        f"{stats.time_to_first_token * 1000:.0f} ms; prefill "
        f"{stats.prefill_tokens_per_second:.1f} tok/s",
        f"generated: {stats.generated_tokens} tokens ({reason}); decode "
        f"{stats.decode_tokens_per_second:.1f} tok/s",
        f"memory: peak RSS {monitor.peak_rss / MB:.0f} MiB; peak private "
        f"{monitor.peak_anonymous / MB:.0f} MiB",
    ]
    return "\n".join(lines)
