"""Options shared by the commands that load an LLM and generate (``run``, ``chat``, ``serve``).

:func:`add_load_arguments` declares where and how a model loads (context length, policy,
threads, accuracy level, weight cache, progress, offline) and :func:`load_llm` loads one
with them; :func:`add_sampling_arguments` / :func:`sampling_from_args` do the same for
sampling. Every function reads its options with defaults, so a namespace from another
command works too.

Sampling defaults are chosen for the demo model, a small *base* model that loops under
greedy decoding ("It is the capital of the country of France." over and over):
temperature 0.7, top-p 0.9 and a repetition penalty of 1.1, drawn with seed 0 — so a run
is reproducible, and :func:`describe_sampling` says how to reproduce it. ``--greedy``
takes the most likely token every time (and no repetition penalty unless one is given).

A load reports on stderr through :class:`~pullweights.cli.progress.LoadReporter` (one bar
on a terminal, a few lines otherwise) and states a ``--context`` above the model's
training context as capped.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pullweights.cli.parsing import UsageError, at_least, number
from pullweights.cli.progress import LoadReporter, report_mode
from pullweights.gguf.installed import installed_model_names
from pullweights.gguf.reader import open_gguf
from pullweights.runtime.context import POLICIES, Context, create_context

if TYPE_CHECKING:
    from loaders import LanguageModel, LoadPlan, SamplingParams

__all__ = [
    "DEFAULT_MODEL",
    "SAMPLING_DEFAULTS",
    "ModelSpec",
    "add_load_arguments",
    "add_sampling_arguments",
    "context_from_args",
    "describe_sampling",
    "is_model_spec",
    "load_llm",
    "model_spec",
    "sampling_from_args",
]

DEFAULT_MODEL = "gemma3-270m"

ModelSpec = str | list[str]

#: The sampling defaults of the CLI.
SAMPLING_DEFAULTS: dict[str, float | int] = {
    "temperature": 0.7,
    "top_p": 0.9,
    "repetition_penalty": 1.1,
    "seed": 0,
}


def model_spec(inputs: list[str]) -> ModelSpec:
    """A model given on the command line: one name, path or URL, or part paths in order."""
    if not inputs:
        return DEFAULT_MODEL
    return inputs[0] if len(inputs) == 1 else list(inputs)


def is_model_spec(text: str) -> bool:
    """Whether ``text`` names a model (an installed name, an existing file, an HTTP URL)
    rather than a prompt."""
    if text in installed_model_names() or text.startswith(("http://", "https://")):
        return True
    try:
        return Path(text).is_file()
    except (OSError, ValueError):
        return False


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """``--context``, ``--policy``, ``--threads``, ``--accuracy-level``, the cache options,
    ``--no-progress``, ``--offline``."""
    parser.add_argument(
        "--context",
        type=at_least(1),
        default=None,
        metavar="N",
        help="positions the KV cache holds, prompt and generated text together (default "
        "4096; above the model's training context it is capped to it, with a note)",
    )
    parser.add_argument("--policy", choices=POLICIES, default="default", help="compute policy")
    parser.add_argument(
        "--threads",
        type=at_least(1),
        default=None,
        metavar="N",
        help="onnxruntime intra-op threads (default: the policy's: physical cores)",
    )
    parser.add_argument(
        "--accuracy-level",
        type=int,
        choices=range(5),
        default=None,
        metavar="{0..4}",
        help="MatMulNBits accuracy level. Default 4: int8 activations, fast. 0: exact float "
        "activations (agrees with a float64 reference to 1e-4) but decodes 30-50x slower",
    )
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--no-cache", action="store_true", help="do not use the weight cache")
    cache.add_argument("--cache-dir", default=None, help="weight cache directory")
    parser.add_argument("--no-progress", action="store_true", help="no loading progress")
    parser.add_argument(
        "--offline", action="store_true", help="no network: a URL must have been pulled before"
    )


def add_sampling_arguments(parser: argparse.ArgumentParser, *, max_tokens: int) -> None:
    """``--max-tokens``, ``--greedy``, ``--temperature``, ``--top-k``, ``--top-p``,
    ``--repetition-penalty``, ``--seed``, ``--stop``."""
    parser.add_argument(
        "--max-tokens",
        type=at_least(1),
        default=max_tokens,
        metavar="N",
        help=f"tokens to generate (default {max_tokens})",
    )
    group = parser.add_argument_group("sampling")
    group.add_argument(
        "--greedy",
        action="store_true",
        help="always take the most likely token (deterministic; no repetition penalty "
        "unless --repetition-penalty is given)",
    )
    group.add_argument(
        "--temperature",
        type=number(0.0),
        default=None,
        help=f"softmax temperature (default {SAMPLING_DEFAULTS['temperature']}; 0 is greedy)",
    )
    group.add_argument(
        "--top-k", type=at_least(0), default=0, help="keep the k most likely tokens (0: all)"
    )
    group.add_argument(
        "--top-p",
        type=number(0.0, 1.0, above=True),
        default=None,
        help=f"nucleus: the most likely tokens holding this probability (default "
        f"{SAMPLING_DEFAULTS['top_p']}; 1: all)",
    )
    group.add_argument(
        "--repetition-penalty",
        type=number(0.0, above=True),
        default=None,
        help="divide the scores of tokens already seen (default "
        f"{SAMPLING_DEFAULTS['repetition_penalty']}; 1: none)",
    )
    group.add_argument(
        "--seed",
        type=int,
        default=None,
        help=f"seed of the draws (default {SAMPLING_DEFAULTS['seed']}: the same text on every run)",
    )
    group.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")


def sampling_from_args(args: argparse.Namespace, *, max_tokens: int = 1024) -> SamplingParams:
    """The sampling options as :class:`~loaders.SamplingParams` (defaults: see the module
    docs).

    Raises:
        UsageError: ``--greedy`` with a ``--temperature`` other than 0.
    """
    from loaders import SamplingParams

    greedy_flag = bool(getattr(args, "greedy", False))
    temperature = getattr(args, "temperature", None)
    if greedy_flag and temperature not in (None, 0.0):
        raise UsageError(f"--greedy and --temperature {temperature:g} contradict each other")
    greedy = greedy_flag or temperature == 0.0

    def pick(name: str, greedy_value: float | int) -> float | int:
        value = getattr(args, name, None)
        if value is not None:
            return value  # type: ignore[no-any-return]
        return greedy_value if greedy else SAMPLING_DEFAULTS[name]

    return SamplingParams(
        temperature=0.0 if greedy else float(pick("temperature", 0.0)),
        top_k=getattr(args, "top_k", 0),
        top_p=float(pick("top_p", 1.0)),
        repetition_penalty=float(pick("repetition_penalty", 1.0)),
        seed=int(pick("seed", 0)),
        max_tokens=getattr(args, "max_tokens", max_tokens),
        stop=list(getattr(args, "stop", [])),
    )


def describe_sampling(params: SamplingParams) -> str:
    """``temperature 0.7, top-p 0.9, repetition penalty 1.1, seed 0`` or ``greedy``."""
    parts: list[str] = []
    if params.greedy:
        parts.append("greedy")
    else:
        parts.append(f"temperature {params.temperature:g}")
        if params.top_k:
            parts.append(f"top-k {params.top_k}")
        if params.top_p < 1.0:
            parts.append(f"top-p {params.top_p:g}")
    if params.repetition_penalty != 1.0:
        parts.append(f"repetition penalty {params.repetition_penalty:g}")
    if not params.greedy:
        parts.append(f"seed {params.seed}")
    return ", ".join(parts)


def context_from_args(args: argparse.Namespace) -> Context:
    """The :class:`~pullweights.Context` of the load options (policy, threads, cache)."""
    cache_dir: Any = getattr(args, "cache_dir", None) or "default"
    if getattr(args, "no_cache", False):
        cache_dir = None
    return create_context(
        getattr(args, "policy", "default"),
        cache_dir=cache_dir,
        intra_op_threads=getattr(args, "threads", None),
    )


#: ``load_llm``'s extra check, called with the plan and the reporter (for notes).
PlanCheck = Callable[["LoadPlan", LoadReporter], object]


async def load_llm(
    model: ModelSpec,
    args: argparse.Namespace,
    *,
    slots: int = 1,
    context: Context | None = None,
    check: PlanCheck | None = None,
) -> LanguageModel:
    """Load ``model`` with the load options of ``args``, reporting on stderr (a bar on a
    terminal, a few lines otherwise; nothing with ``--no-progress`` or ``--quiet``).

    Before any weight is pulled, a ``--context`` above the model's training context is
    stated as capped and ``check(plan, reporter)`` (may be async) runs; an exception it
    raises ends the load.

    Raises:
        PullWeightsError: the model cannot be opened, read or built.
    """
    from loaders import load_model

    context = context or context_from_args(args)
    quiet = getattr(args, "no_progress", False) or getattr(args, "quiet", False)
    remote_dir = None if context.cache_dir is None else context.cache_dir / "remote"
    offline = bool(getattr(args, "offline", False))
    name = model if isinstance(model, str) else " ".join(model)
    with LoadReporter(report_mode(enabled=not quiet)) as reporter:

        async def on_plan(plan: LoadPlan) -> None:
            if plan.context_capped:
                reporter.note(
                    f"--context {plan.requested_context} is more than {name}'s training "
                    f"context of {plan.config.train_context} positions: using --context "
                    f"{plan.context_length}"
                )
            if check is not None:
                checked = check(plan, reporter)
                if inspect.isawaitable(checked):
                    await checked

        headers = None if context.cache is None else context.cache.headers
        async with await open_gguf(
            model, remote_dir=remote_dir, offline=offline, headers=headers
        ) as gguf:
            llm = await load_model(
                gguf,
                context=context,
                context_length=getattr(args, "context", None),
                accuracy_level=getattr(args, "accuracy_level", None),
                progress=reporter.progress if reporter.mode != "off" else None,
                slots=slots,
                on_plan=on_plan,
            )
            if context.cache is not None and isinstance(model, str):
                context.cache.register_model(gguf.source, name=model)  # for `cache list`
            return llm
