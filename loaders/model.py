"""A loaded language model: its compiled decoder graph, tokenizer and KV cache slots.

Each sequence's KV cache is a :class:`~loaders.slots.KVSlot`: one pair of
:class:`~pullweights.runtime.tensor.Tensor` per layer, allocated at the model's cache
descriptor (``float32[1, kv_heads, context, head_dim]``; zero pages: memory is only touched
as positions fill) and bound as both the ``past_*`` inputs and the ``present_*`` outputs of
every step, so ``GroupQueryAttention`` appends the new rows in place. A step takes any
number of new tokens: the prompt in one step, then one token per step. Steps on different
slots may run at the same time (separate dispatches of the one graph); generations borrow
slots from :attr:`LanguageModel.slots`, and :meth:`LanguageModel.forward` without a slot
uses a slot of its own (:attr:`LanguageModel.default_slot`).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from gguf import GGMLQuantizationType

from loaders.blocks import Architecture, DecoderInputs
from loaders.config import DEFAULT_CONTEXT, ModelConfig
from loaders.plan import LoadPlan
from loaders.slots import KVSlot, SlotPool
from loaders.tokenizer import Tokenizer
from loaders.validate import check_tensors
from loaders.weights import WeightMap
from pullweights import Context, Graph, GraphBuilder, Tensor, TensorDescriptor, create_context
from pullweights.allocation import check_allocation
from pullweights.dtypes import cast_exact
from pullweights.errors import ComputeError, FormatError, GraphError
from pullweights.events import Phase, ProgressCallback, mark
from pullweights.gguf.reader import GGUFFile
from pullweights.graph.stages import StagePlan
from pullweights.runtime.prefetch import SessionPrefetch

__all__ = ["LanguageModel", "LoadStats", "build_model"]


@dataclass(frozen=True)
class LoadStats:
    """What loading cost: wall time, and how many of the transformed weights the cache
    served (as entries, or inside saved sessions) instead of transforming them again."""

    seconds: float
    payloads: int
    transformed: int
    cache_hits: int


class LanguageModel:
    """A decoder-only LLM ready to run. Create with :func:`loaders.load_model`.

    Attributes:
        config: the model's hyper-parameters.
        tokenizer: its tokenizer (from the GGUF metadata).
        metadata: the GGUF metadata (names, chat template) without its long arrays (the
            vocabulary lives in the tokenizer).
        context: positions a KV cache holds; prompt plus generated tokens must fit.
        graph: the compiled decoder graph.
        stats: what loading cost.
        slots: the pool of KV cache slots that generations borrow (``slots`` of them).
        default_slot: the slot :meth:`forward` uses when given none (not in the pool).
    """

    def __init__(
        self,
        *,
        config: ModelConfig,
        tokenizer: Tokenizer,
        metadata: dict[str, object],
        graph: Graph,
        cache_descriptor: TensorDescriptor,
        stats: LoadStats,
        tables: Mapping[str, np.ndarray] | None = None,
        slots: int = 1,
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.metadata = metadata
        self.graph = graph
        self.stats = stats
        self.context = cache_descriptor.static_shape[2]
        self.slots = SlotPool(cache_descriptor, config.n_layers, slots)
        self.default_slot = KVSlot(cache_descriptor, config.n_layers)
        # RoPE tables of this context's positions, bound on every step (the graph itself
        # is the same for every context length).
        self._tables = {name: Tensor(arr) for name, arr in (tables or {}).items()}

    @property
    def position(self) -> int:
        """Tokens currently in the default slot's KV cache."""
        return self.default_slot.position

    @property
    def kv_cache_bytes(self) -> int:
        """Bytes reserved by one slot's KV cache (only touched pages use memory)."""
        return self.default_slot.nbytes

    def reset(self) -> None:
        """Forget every position of the default slot (the next step is a new prompt)."""
        self.default_slot.reset()

    async def forward(
        self,
        token_ids: Sequence[int] | npt.NDArray[np.integer],
        *,
        all_logits: bool = False,
        slot: KVSlot | None = None,
    ) -> npt.NDArray[np.float32]:
        """Append ``token_ids`` to ``slot``'s cache (default: :attr:`default_slot`) and
        return logits.

        Returns:
            ``float32[1, vocab]`` for the last token, or ``[len(token_ids), vocab]`` with
            ``all_logits``.

        Raises:
            ComputeError: no tokens, an id outside the vocabulary, or more tokens than
                the context has room for.
        """
        try:
            given = np.asarray(token_ids)
            if given.size and given.dtype.kind not in "iu":
                raise ValueError(f"got {given.dtype} values")
            ids = cast_exact(given, "int64").reshape(-1)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ComputeError(f"forward: token ids must be integers: {exc}") from None
        n = int(ids.size)
        if n == 0:
            raise ComputeError("forward: no tokens given (the prompt is empty)")
        if int(ids.min()) < 0 or int(ids.max()) >= self.config.vocab_size:
            raise ComputeError(
                f"forward: token ids must lie in [0, {self.config.vocab_size}), "
                f"got {int(ids.min())}..{int(ids.max())}"
            )
        slot = slot if slot is not None else self.default_slot
        async with slot.lock:
            total = slot.position + n
            if total > self.context:
                raise ComputeError(
                    f"forward: {n} tokens after {slot.position} cached ones need {total} "
                    f"positions; the context holds {self.context} (load with a larger "
                    f"context_length, up to the model's {self.config.train_context})"
                )
            index = np.arange(n, dtype=np.int64) if all_logits else np.array([n - 1], np.int64)
            inputs: dict[str, Tensor | np.ndarray] = {
                "input_ids": ids,
                "logits_index": index,
                "seqlens_k": np.array([total - 1], dtype=np.int32),
                "total_sequence_length": np.array(total, dtype=np.int32),
                **slot.inputs,
                **self._tables,
            }
            result = await self.graph.dispatch(inputs, slot.outputs)
            slot.tokens.extend(ids.tolist())
        return result["logits"].view()


async def build_model(
    gguf: GGUFFile,
    architecture: Architecture,
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
    """Build, load and compile ``gguf`` as ``architecture`` (see :func:`loaders.load_model`)."""
    start = time.perf_counter()
    context = context or create_context()
    embedding = gguf.tensor("token_embd.weight")
    if len(embedding.shape) != 2:
        raise FormatError(f"token_embd.weight has shape {list(embedding.shape)}: expected 2-D")
    config = architecture.config(gguf.metadata, embedding.shape[0])
    check_tensors(config, gguf.tensors, gguf.metadata)  # before anything is sized from config
    if "rope_freqs.weight" in gguf.tensors:
        config = replace(config, rope_freq_factors=await _freq_factors(gguf, config))
    if context_length is not None and context_length < 1:
        raise GraphError(f"context_length must be >= 1, got {context_length}")
    if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
        raise GraphError(f"slots must be >= 1, got {slots!r}")
    length = min(context_length or DEFAULT_CONTEXT, config.train_context)
    check_allocation(
        slots * _state_bytes(config, length),
        f"the KV caches ({slots} slots) and RoPE tables of {config.n_layers} layers x "
        f"{length} positions",
        GraphError,
    )
    plan = LoadPlan(config, length, context_length, gguf.metadata, context.cache_dir)
    # The tokenizer is built in a worker thread while onnxruntime creates the session in
    # another. Building it holds the GIL for long stretches (about 1 s for gemma3's
    # vocabulary, most of it in one ``tokenizers`` call), which stalls every Python step
    # of compiling (hashing the session key, opening cache entries: each I/O call waits
    # for the GIL again); so it starts only once the session is being created, when
    # compiling needs almost no Python (qwen2.5-0.5b warm load 1.6 -> 1.2 s measured),
    # unless ``on_plan`` needed it earlier to count a prompt's tokens.
    try:
        if on_plan is not None:
            checked = on_plan(plan)
            if inspect.isawaitable(checked):
                await checked
        # The saved sessions the last load like this one used start opening now, while
        # the graph is built (pullweights.runtime.prefetch, benchmarks/bench_prefetch.py).
        # Their checks (Python) run first, alone: building the graph at the same time
        # would leave them waiting for the GIL after every file operation.
        prefetch = None
        if prefetch_sessions:
            prefetch = _prefetch(gguf, architecture, context, stages, accuracy_level, stack_weights)
        built = False
        try:
            if prefetch is not None:
                await prefetch.checked()
            builder = GraphBuilder(context)
            weights = WeightMap(builder, gguf, accuracy_level=accuracy_level, stack=stack_weights)
            io = DecoderInputs.declare(builder, config, length)
            logits = architecture.build(builder, weights, io)
            payloads = weights.payloads
            transformed = [p for p in payloads if p.transform is not None]
            graph = await builder.build(
                {"logits": logits, **io.presents},
                stages=stages,
                progress=progress,
                on_compile_start=plan.start_tokenizer,
                prefetch=prefetch,
            )
            built = True
        finally:  # remember this load's sessions (if it built), close what it did not take
            if prefetch is not None:
                await prefetch.finish(remember=built)
        tokenizer = await plan.tokenizer()
    except BaseException:
        await plan.cancel()
        raise
    model = LanguageModel(
        config=config,
        tokenizer=tokenizer,
        metadata=_scalar_metadata(gguf.metadata),
        graph=graph,
        cache_descriptor=io.cache_descriptor,
        tables=io.tables,
        stats=LoadStats(0.0, len(payloads), len(transformed), len(transformed) - graph.transformed),
        slots=slots,
    )
    # One token through the graph, as llama.cpp's warm-up: onnxruntime's first run
    # allocates and initializes (~0.2 s) and should not count as the first prompt's time.
    await model.forward([0])
    model.reset()
    model.stats = replace(model.stats, seconds=time.perf_counter() - start)
    mark(Phase.READY, "model")
    return model


def _prefetch(
    gguf: GGUFFile,
    architecture: Architecture,
    context: Context,
    stages: StagePlan,
    accuracy_level: int | None,
    stack_weights: bool,
) -> SessionPrefetch | None:
    """Start opening the saved sessions of the last load of ``gguf`` with these options
    (None without a cache, or for a source of unknown identity)."""
    sources = [s.identity for s in gguf.sources]
    if not all(sources):
        return None
    options = f"stages={stages!r} accuracy={accuracy_level!r} stack={stack_weights!r}"
    return SessionPrefetch.start(context, "|".join([architecture.name, options, *sources]))


async def _freq_factors(gguf: GGUFFile, config: ModelConfig) -> tuple[float, ...]:
    """llama3's ``rope_freqs.weight``: one divisor per rotated pair (read at build time)."""
    tensor = gguf.tensor("rope_freqs.weight")
    if tensor.ggml_type != GGMLQuantizationType.F32 or tensor.shape != (config.head_dim // 2,):
        raise FormatError(
            f"rope_freqs.weight: {tensor.ggml_type.name}{list(tensor.shape)}, expected "
            f"F32[{config.head_dim // 2}]"
        )
    data = await tensor.source.read(tensor.offset, tensor.nbytes)
    factors = np.frombuffer(data, dtype=np.float32)
    if not bool(np.all(np.isfinite(factors) & (factors > 0))):
        raise FormatError("rope_freqs.weight: every factor must be a finite number > 0")
    return tuple(float(f) for f in factors)


def _state_bytes(config: ModelConfig, length: int) -> int:
    """Bytes the model state takes for ``length`` positions: the KV caches (float32, all
    layers) and the RoPE cos/sin tables (at most two bases; float64 while computed)."""
    kv = 2 * config.n_layers * config.kv_dim * length * 4
    tables = 2 * 2 * length * (config.head_dim // 2) * 8
    return kv + tables


def _scalar_metadata(metadata: Mapping[str, object]) -> dict[str, object]:
    """``metadata`` without arrays (token lists, scores, merges: tens of MB of objects)."""
    return {
        key: value
        for key, value in metadata.items()
        if not isinstance(value, (list, tuple, np.ndarray)) or len(value) <= 64
    }
