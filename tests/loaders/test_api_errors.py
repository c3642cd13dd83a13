"""Misuse of the loaders' entry points (load_model, generate, generate_tokens,
encode_prompt, SamplingParams) ends in one pullweights error."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loaders import (
    LanguageModel,
    SamplingParams,
    encode_prompt,
    generate,
    generate_tokens,
    load_model,
)
from pullweights import create_context
from pullweights.errors import ComputeError, GraphError, PullWeightsError, SourceError
from tests.reference import write_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LanguageModel]:
    path = write_tiny_model(tmp_path_factory.mktemp("api") / "q.gguf", "qwen2")
    model = asyncio.run(load_model(path, context=create_context(cache_dir=None)))
    return path, model


def _texts(model: LanguageModel, *args: Any) -> list[str]:
    async def run() -> list[str]:
        return [t async for t in generate(model, *args)]

    return asyncio.run(run())


def _ids(model: LanguageModel, *args: Any) -> list[int]:
    async def run() -> list[int]:
        return [t async for t in generate_tokens(model, *args)]

    return asyncio.run(run())


CASES: dict[str, tuple[Callable[[Path, LanguageModel], object], type[PullWeightsError], str]] = {
    "load_model of an int": (
        lambda p, m: asyncio.run(load_model(123)),  # type: ignore[arg-type]
        SourceError,
        "is not a path",
    ),
    "load_model of None": (
        lambda p, m: asyncio.run(load_model(None)),  # type: ignore[arg-type]
        SourceError,
        "is not a path",
    ),
    "load_model context_length a string": (
        lambda p, m: asyncio.run(load_model(p, context_length="x")),  # type: ignore[arg-type]
        GraphError,
        "context_length must be an int",
    ),
    "load_model accuracy_level 7": (
        lambda p, m: asyncio.run(load_model(p, accuracy_level=7)),
        GraphError,
        "accuracy_level must be one of",
    ),
    "load_model context a string": (
        lambda p, m: asyncio.run(load_model(p, context="ctx")),  # type: ignore[arg-type]
        GraphError,
        "create_context",
    ),
    "generate params a string": (
        lambda p, m: _texts(m, "hi", "bad"),
        ComputeError,
        "SamplingParams",
    ),
    "generate a prompt of None": (lambda p, m: _texts(m, None), ComputeError, "must be text"),
    "generate float token ids": (lambda p, m: _texts(m, [1.5]), ComputeError, "not an integer"),
    "generate text longer than the context could hold": (
        lambda p, m: _texts(m, "x" * 5_000_000),
        ComputeError,
        "characters, more than the",
    ),
    "generate_tokens of a string": (lambda p, m: _ids(m, "abc"), ComputeError, "token ids"),
    "generate_tokens of None": (lambda p, m: _ids(m, None), ComputeError, "token ids"),
    "generate_tokens id past int64": (lambda p, m: _ids(m, [10**30]), ComputeError, "integer"),
    "generate_tokens negative id": (lambda p, m: _ids(m, [-1]), ComputeError, "must lie in"),
    "encode_prompt of a dict": (lambda p, m: encode_prompt(m, {"a": 1}), ComputeError, "must be"),  # type: ignore[arg-type]
    "forward of a string": (lambda p, m: asyncio.run(m.forward("abc")), ComputeError, "integers"),  # type: ignore[arg-type]
    "SamplingParams temperature a string": (
        lambda p, m: SamplingParams(temperature="x"),  # type: ignore[arg-type]
        ComputeError,
        "temperature",
    ),
    "SamplingParams stop a string": (
        lambda p, m: SamplingParams(stop="x"),  # type: ignore[arg-type]
        ComputeError,
        "list of strings",
    ),
    "SamplingParams seed a string": (
        lambda p, m: SamplingParams(seed="x"),  # type: ignore[arg-type]
        ComputeError,
        "seed",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_loader_misuse_is_one_pullweights_error(
    case: str, tiny: tuple[Path, LanguageModel]
) -> None:
    call, error, pattern = CASES[case]
    with pytest.raises(error, match=pattern):
        call(*tiny)


def test_the_model_still_generates_after_misuse(tiny: tuple[Path, LanguageModel]) -> None:
    _, model = tiny
    assert len(_ids(model, [1, 2, 3], SamplingParams(max_tokens=2))) <= 2
