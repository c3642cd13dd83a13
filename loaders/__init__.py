"""Model builders: real LLMs assembled from GGUF metadata with the pullweights builder.

One file per architecture (:mod:`loaders.llama`, :mod:`loaders.qwen2`,
:mod:`loaders.gemma3`), each with the same skeleton (config from metadata, blocks,
graph), registered here by ``general.architecture``.

Example::

    model = await load_model("gemma3-270m")
    async for text in generate(model, "The capital of France is", SamplingParams(max_tokens=20)):
        print(text, end="")
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from loaders.blocks import Architecture
from loaders.config import DEFAULT_CONTEXT, ModelConfig
from loaders.gemma3 import GEMMA3
from loaders.generate import (
    GenerationStats,
    Step,
    TextChunk,
    encode_prompt,
    generate,
    generate_chunks,
    generate_steps,
    generate_tokens,
)
from loaders.llama import LLAMA
from loaders.model import LanguageModel, LoadStats, build_model
from loaders.plan import LoadPlan
from loaders.qwen2 import QWEN2
from loaders.sampling import SamplingParams
from loaders.slots import KVSlot, SlotPool
from pullweights.errors import GraphError, SourceError, UnsupportedError
from pullweights.events import ProgressCallback
from pullweights.gguf.reader import GGUFFile, ModelSpec, open_gguf
from pullweights.graph.stages import StagePlan
from pullweights.runtime.context import Context, create_context
from pullweights.sources.base import ByteSource

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_CONTEXT",
    "Architecture",
    "GenerationStats",
    "KVSlot",
    "LanguageModel",
    "LoadPlan",
    "LoadStats",
    "ModelConfig",
    "SamplingParams",
    "SlotPool",
    "Step",
    "TextChunk",
    "architecture_for",
    "encode_prompt",
    "generate",
    "generate_chunks",
    "generate_steps",
    "generate_tokens",
    "load_model",
]

#: Architectures by ``general.architecture`` (aliases included).
ARCHITECTURES: dict[str, Architecture] = {
    name: arch for arch in (LLAMA, QWEN2, GEMMA3) for name in (arch.name, *arch.aliases)
}


def architecture_for(name: str) -> Architecture:
    """The registered architecture called ``name``.

    Raises:
        UnsupportedError: no architecture file handles ``name``.
    """
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise UnsupportedError(
            f"architecture {name!r} is not supported; supported: {', '.join(sorted(ARCHITECTURES))}"
        ) from None


async def load_model(
    model: ModelSpec | GGUFFile,
    *,
    context: Context | None = None,
    context_length: int | None = None,
    accuracy_level: int | None = None,
    progress: ProgressCallback | None = None,
    stages: StagePlan = "auto",
    slots: int = 1,
    on_plan: Callable[[LoadPlan], object] | None = None,
    stack_weights: bool = True,
    prefetch_sessions: bool = True,
) -> LanguageModel:
    """Open a GGUF model, build its decoder graph, pull its weights and compile.

    Args:
        model: a path, part paths in order, an installed model name (``"gemma3-270m"``),
            a URL (its header is remembered under the cache directory, its weights go
            to the weight cache), a byte source, or an open :class:`GGUFFile`.
        context: where to compile and run (policy, threads, weight cache); default
            :func:`pullweights.create_context`.
        context_length: positions the KV cache holds (default
            :data:`DEFAULT_CONTEXT`); a larger value than the model's training context is
            capped to it (:attr:`LoadPlan.context_capped` tells).
        accuracy_level: ``MatMulNBits`` accuracy level (default: 4, int8 activations;
            0 computes with exact float activations).
        progress: called with a :class:`~pullweights.events.Progress` per weight pulled.
        stages: how the decoder is cut into stages, each its own onnxruntime session
            compiled as soon as its weights have arrived (see
            :meth:`pullweights.GraphBuilder.build`; ``1`` compiles one session).
        slots: how many sequences may generate at once (:attr:`LanguageModel.slots`); each
            slot is a KV cache that uses memory as its sequence grows (up to
            ``2 * layers * kv_heads * context * head_dim * 4`` bytes) and keeps its tokens
            for prefix reuse. More generations than slots wait for one.
        on_plan: called (and awaited, if it returns an awaitable) with the
            :class:`LoadPlan` once the header is read and before any weight is pulled:
            the config, the context length the load uses, the metadata, and a way to
            count a prompt's tokens. An exception it raises ends the load.
        stack_weights: run each block's Q/K/V projections as one matmul where their
            types allow (:data:`pullweights.gguf.stacked.STACKS`; the default); False
            runs one matmul per weight (for comparisons).
        prefetch_sessions: with a weight cache, open the saved sessions the last load of
            this model with these options used while the graph is built
            (:mod:`pullweights.runtime.prefetch`; the default); False opens each once
            its stage exists (for comparisons).

    Raises:
        UnsupportedError: an architecture or tensor type that is not handled.
        FormatError: metadata or tensors the architecture needs are missing, malformed,
            out of range or inconsistent with each other.
        SourceError: ``model`` names nothing that can be opened, or the file cannot be read.
        GraphError: ``context``, ``context_length`` or ``accuracy_level`` is invalid, or
            the KV cache of ``context_length`` would not fit in memory.
    """
    _check_options(model, context, context_length, accuracy_level)
    options = {
        "context_length": context_length,
        "accuracy_level": accuracy_level,
        "progress": progress,
        "stages": stages,
        "slots": slots,
        "on_plan": on_plan,
        "stack_weights": bool(stack_weights),
        "prefetch_sessions": bool(prefetch_sessions),
    }
    if isinstance(model, GGUFFile):
        return await _load(model, context, options)
    context = context or create_context()
    remote_dir = None if context.cache_dir is None else context.cache_dir / "remote"
    headers = None if context.cache is None else context.cache.headers
    async with await open_gguf(model, remote_dir=remote_dir, headers=headers) as gguf:
        loaded = await _load(gguf, context, options)
        if isinstance(model, str) and context.cache is not None:
            context.cache.register_model(gguf.source, name=model)  # what `cache list` calls it
        return loaded


def _check_options(
    model: object, context: object, context_length: object, accuracy_level: object
) -> None:
    """The argument errors of :func:`load_model`, before anything is opened."""
    specs = (str, os.PathLike, ByteSource, GGUFFile, list, tuple)
    if not isinstance(model, specs) or (
        isinstance(model, (list, tuple))
        and not all(isinstance(p, (str, os.PathLike)) for p in model)
    ):
        raise SourceError(
            f"load_model: {model!r:.80} is not a path, part paths, a model name, a URL or a "
            "byte source"
        )
    if context is not None and not isinstance(context, Context):
        raise GraphError(f"load_model: context must come from create_context(), got {context!r}")
    if context_length is not None and (
        not isinstance(context_length, int) or isinstance(context_length, bool)
    ):
        raise GraphError(f"context_length must be an int, got {context_length!r}")
    if accuracy_level is not None and accuracy_level not in ACCURACY_LEVELS:
        raise GraphError(
            f"accuracy_level must be one of {ACCURACY_LEVELS} (MatMulNBits), got {accuracy_level!r}"
        )


#: ``MatMulNBits`` accuracy levels: 0 exact float activations ... 4 int8 activations.
ACCURACY_LEVELS = (0, 1, 2, 3, 4)


async def _load(gguf: GGUFFile, context: Context | None, options: dict[str, Any]) -> LanguageModel:
    return await build_model(gguf, architecture_for(gguf.architecture), context=context, **options)
