"""Options shared by the commands that load an LLM and generate (``chat``, ``serve``).

:func:`add_load_arguments` declares where and how a model loads (context length, policy,
accuracy level, weight cache, progress bar) and :func:`load_llm` loads one with them;
:func:`add_sampling_arguments` / :func:`sampling_from_args` do the same for sampling.
Every function reads its options with defaults, so a namespace from another command
(``run``) works too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pullweights.cli.progress import load_progress_bar
from pullweights.gguf.installed import installed_model_names
from pullweights.gguf.reader import open_gguf
from pullweights.runtime.context import POLICIES, create_context

if TYPE_CHECKING:
    from loaders import LanguageModel, SamplingParams

__all__ = [
    "DEFAULT_MODEL",
    "ModelSpec",
    "add_load_arguments",
    "add_sampling_arguments",
    "is_model_spec",
    "load_llm",
    "model_spec",
    "sampling_from_args",
]

DEFAULT_MODEL = "gemma3-270m"

ModelSpec = str | list[str]


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
    parser.add_argument("--context", type=int, default=None, help="KV cache length (default 4096)")
    parser.add_argument("--policy", choices=POLICIES, default="default", help="compute policy")
    parser.add_argument(
        "--threads", type=int, default=None, help="onnxruntime threads per run (default: cores)"
    )
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


def add_sampling_arguments(parser: argparse.ArgumentParser, *, max_tokens: int) -> None:
    """``--max-tokens``, ``--temperature``, ``--top-k``, ``--top-p``, ``--repetition-penalty``,
    ``--seed``, ``--stop``."""
    parser.add_argument(
        "--max-tokens", type=int, default=max_tokens, help=f"tokens per answer ({max_tokens})"
    )
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
    parser.add_argument("--top-k", type=int, default=0, help="keep the k best tokens (0: all)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus probability mass")
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None, help="seed of the sampler")
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")


def sampling_from_args(args: argparse.Namespace, *, max_tokens: int = 1024) -> SamplingParams:
    """The sampling options as :class:`~loaders.SamplingParams`.

    Raises:
        ComputeError: a value out of range (names the option's field).
    """
    from loaders import SamplingParams

    return SamplingParams(
        temperature=getattr(args, "temperature", 0.0),
        top_k=getattr(args, "top_k", 0),
        top_p=getattr(args, "top_p", 1.0),
        repetition_penalty=getattr(args, "repetition_penalty", 1.0),
        seed=getattr(args, "seed", None),
        max_tokens=getattr(args, "max_tokens", max_tokens),
        stop=list(getattr(args, "stop", [])),
    )


async def load_llm(model: ModelSpec, args: argparse.Namespace, *, slots: int = 1) -> LanguageModel:
    """Load ``model`` with the load options of ``args`` (progress bar on a terminal).

    Raises:
        PullWeightsError: the model cannot be opened, read or built.
    """
    from loaders import load_model

    cache_dir: Any = getattr(args, "cache_dir", None) or "default"
    if getattr(args, "no_cache", False):
        cache_dir = None
    context = create_context(
        getattr(args, "policy", "default"),
        cache_dir=cache_dir,
        intra_op_threads=getattr(args, "threads", None),
    )
    show = not getattr(args, "no_progress", False) and sys.stderr.isatty()
    bar, progress = load_progress_bar(show)
    remote_dir = None if context.cache_dir is None else context.cache_dir / "remote"
    offline = bool(getattr(args, "offline", False))
    try:
        async with await open_gguf(model, remote_dir=remote_dir, offline=offline) as gguf:
            llm = await load_model(
                gguf,
                context=context,
                context_length=getattr(args, "context", None),
                accuracy_level=getattr(args, "accuracy_level", None),
                progress=progress,
                slots=slots,
            )
            if context.cache is not None and isinstance(model, str):
                context.cache.register_model(gguf.source, name=model)  # for `cache list`
            return llm
    finally:
        if bar is not None:
            bar.close()
