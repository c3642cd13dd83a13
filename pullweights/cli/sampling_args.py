"""``run``'s sampling options, their defaults, and the line the report prints about them.

The defaults are chosen for the demo model, a small *base* model that loops under greedy
decoding ("It is the capital of the country of France." over and over): temperature 0.7,
top-p 0.9 and a repetition penalty of 1.1, drawn with seed 0 — so a run is reproducible
and the report says how to reproduce it. ``--greedy`` takes the most likely token every
time (and no repetition penalty unless one is given), as llama.cpp comparisons do.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from pullweights.cli.parsing import at_least, number

if TYPE_CHECKING:
    from loaders import SamplingParams

__all__ = ["DEFAULTS", "add_sampling_arguments", "describe_sampling", "sampling"]

#: The sampling defaults of ``pullweights run``.
DEFAULTS = {"temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.1, "seed": 0}


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--greedy``, ``--temperature``, ``--top-k``, ``--top-p``,
    ``--repetition-penalty`` and ``--seed`` to ``parser``."""
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
        help=f"softmax temperature (default {DEFAULTS['temperature']}; 0 is greedy)",
    )
    group.add_argument(
        "--top-k", type=at_least(0), default=0, help="keep the k most likely tokens (0: all)"
    )
    group.add_argument(
        "--top-p",
        type=number(0.0, 1.0, above=True),
        default=None,
        help=f"nucleus: the most likely tokens holding this probability (default "
        f"{DEFAULTS['top_p']}; 1: all)",
    )
    group.add_argument(
        "--repetition-penalty",
        type=number(0.0, above=True),
        default=None,
        help=f"divide the scores of tokens already seen (default {DEFAULTS['repetition_penalty']}"
        "; 1: none)",
    )
    group.add_argument(
        "--seed",
        type=int,
        default=None,
        help=f"seed of the draws (default {DEFAULTS['seed']}: the same text on every run)",
    )


def sampling(args: argparse.Namespace) -> SamplingParams:
    """The :class:`~loaders.SamplingParams` of ``run``'s options.

    Raises:
        UsageError: ``--greedy`` with a ``--temperature`` other than 0.
    """
    from loaders import SamplingParams
    from pullweights.cli.parsing import UsageError

    if args.greedy and args.temperature not in (None, 0.0):
        raise UsageError(f"--greedy and --temperature {args.temperature:g} contradict each other")
    greedy = args.greedy or args.temperature == 0.0

    def pick(name: str, value: float | int | None, greedy_value: float | int) -> float | int:
        if value is not None:
            return value
        return greedy_value if greedy else DEFAULTS[name]

    return SamplingParams(
        temperature=0.0 if greedy else float(pick("temperature", args.temperature, 0.0)),
        top_k=args.top_k,
        top_p=float(pick("top_p", args.top_p, 1.0)),
        repetition_penalty=float(pick("repetition_penalty", args.repetition_penalty, 1.0)),
        seed=int(pick("seed", args.seed, 0)),
        max_tokens=args.max_tokens,
        stop=list(args.stop),
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
