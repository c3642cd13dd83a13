"""The context: a compute policy mapped to onnxruntime settings, a weight cache, and the
compile pipeline a :class:`~pullweights.graph.builder.GraphBuilder` hands its graphs to.

Compute policies use the WebNN ``MLComputePolicy`` names:

================== ==========================================================================
policy             onnxruntime settings
================== ==========================================================================
``default``        best available provider; intra-op threads = physical cores (onnxruntime's
                   own choice); all graph optimizations; threads yield when idle
``high-performance`` best available provider; intra-op threads = every logical CPU; spinning
                   threads for the lowest latency; all graph optimizations
``low-power``      CPU; one intra-op thread, no spinning; all graph optimizations
``fallback``       CPU only; one thread; basic graph optimizations only — the most
                   conservative, most portable configuration
================== ==========================================================================

"Best available" prefers CUDA, then CPU, among ``onnxruntime.get_available_providers()``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
import onnxruntime as ort

from pullweights.descriptor import TensorDescriptor
from pullweights.errors import GraphError
from pullweights.events import ProgressCallback
from pullweights.graph.lowering import LoweredGraph
from pullweights.runtime.pipeline import compile_graph
from pullweights.runtime.prefetch import SessionPrefetch
from pullweights.runtime.puller import DEFAULT_BUDGET
from pullweights.runtime.tensor import Tensor

if TYPE_CHECKING:
    from pullweights.cache import WeightCache
    from pullweights.runtime.graph import Graph

__all__ = ["ComputePolicy", "Context", "create_context"]

ComputePolicy = Literal["default", "high-performance", "low-power", "fallback"]
POLICIES: tuple[str, ...] = get_args(ComputePolicy)


def _providers(policy: str) -> list[str]:
    available = ort.get_available_providers()
    if policy in ("low-power", "fallback"):
        return ["CPUExecutionProvider"]
    preferred = [p for p in ("CUDAExecutionProvider",) if p in available]
    return [*preferred, "CPUExecutionProvider"]


_arena_lock = threading.Lock()
_arena_registered = False


def _share_cpu_arena() -> None:
    """Register one CPU arena in onnxruntime's environment, once per process, for every
    session to allocate its working memory from (``session.use_env_allocators``).

    Each session otherwise keeps an arena of its own, grown to its largest run and never
    shrunk: a graph compiled in 12 stages kept 12 (qwen2.5-coder-0.5b after a 128-token
    prefill: 351 MiB private with one arena each, 205 MiB shared). Prepacked weights are
    not allocated from it.
    """
    global _arena_registered
    with _arena_lock:
        if _arena_registered:
            return
        info = ort.OrtMemoryInfo(
            "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
        )
        # max memory 0 = unlimited; -1 = onnxruntime's defaults for the rest
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
        _arena_registered = True


@dataclass
class Context:
    """Where graphs compile and run. Create with :func:`create_context`."""

    policy: ComputePolicy = "default"
    intra_op_threads: int = 0
    #: On-disk cache for transformed and remote weights; ``None`` disables it.
    cache_dir: Path | None = None
    providers: list[str] = field(default_factory=list)
    #: Save compiled sessions (optimized model + prepacked weights) in the cache and map
    #: them on later loads of the same graph (see :mod:`pullweights.runtime.saved`).
    session_cache: bool = True
    #: Bytes a load keeps in flight at most (read buffers and transform outputs not yet
    #: in their final place).
    memory_budget: int = DEFAULT_BUDGET
    #: After saving a stage's session on a first load, re-open it over the saved,
    #: memory-mapped file so its packed weights leave the heap (costs one more session
    #: creation per stage; see :mod:`pullweights.runtime.pipeline`).
    remap_saved: bool = True
    _cache: WeightCache | None = field(default=None, repr=False)

    def session_options(self) -> ort.SessionOptions:
        """Fresh onnxruntime session options for this policy."""
        so = ort.SessionOptions()
        so.log_severity_level = 4
        if self.policy == "fallback":
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        else:
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = self.intra_op_threads
        so.inter_op_num_threads = 1
        spin = "1" if self.policy == "high-performance" else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", spin)
        _share_cpu_arena()
        so.add_session_config_entry("session.use_env_allocators", "1")
        return so

    @property
    def cache(self) -> WeightCache | None:
        """The :class:`~pullweights.cache.WeightCache` of ``cache_dir`` (opened lazily)."""
        if self._cache is None and self.cache_dir is not None:
            from pullweights.cache import WeightCache

            self._cache = WeightCache(self.cache_dir)
        return self._cache

    def create_tensor(self, value: TensorDescriptor | np.ndarray) -> Tensor:
        """A tensor that lives as an onnxruntime value across computes (e.g. a KV cache).

        Pass a descriptor (zero-filled; static shape) or an array (copied in).
        """
        return Tensor.create(value)

    async def compile(
        self,
        lowered: LoweredGraph,
        *,
        progress: ProgressCallback | None = None,
        on_compile_start: Callable[[], object] | None = None,
        prefetch: object | None = None,
    ) -> Graph:
        """Pull ``lowered``'s weights and compile its stages (what ``GraphBuilder.build``
        calls; see :mod:`pullweights.runtime.pipeline`). ``prefetch``: a
        :class:`~pullweights.runtime.prefetch.SessionPrefetch` of this context, or None.

        Raises:
            GraphError: ``prefetch`` is something else.
        """
        if prefetch is not None and not (
            isinstance(prefetch, SessionPrefetch) and prefetch.context is self
        ):
            raise GraphError(
                f"prefetch must be a SessionPrefetch started on this context, got {prefetch!r}"
            )
        return await compile_graph(
            self,
            lowered,
            progress=progress,
            on_compile_start=on_compile_start,
            prefetch=prefetch,
        )


def create_context(
    policy: ComputePolicy = "default",
    *,
    intra_op_threads: int | None = None,
    cache_dir: str | os.PathLike[str] | Literal["default"] | None = "default",
    session_cache: bool = True,
    memory_budget: int | None = None,
) -> Context:
    """Create a :class:`Context` for ``policy`` (see the module docs for the mapping).

    Args:
        policy: ``default``, ``high-performance``, ``low-power`` or ``fallback``.
        intra_op_threads: override the policy's thread count (0 = onnxruntime's choice).
        cache_dir: weight cache directory; ``"default"`` uses ``$PULLWEIGHTS_CACHE``, then
            ``$XDG_CACHE_HOME/pullweights``, then ``~/.cache/pullweights``; ``None`` disables
            caching.
        session_cache: keep each compiled session's optimized model and prepacked weights
            in the cache, so a later load of the same graph maps them instead of holding a
            private copy (CPU only; needs ``cache_dir``). Costs disk (about 2.4x the
            model's weights) and some time on the first load.
        memory_budget: bytes a load keeps in flight at most (default 256 MiB).

    Raises:
        GraphError: unknown policy, a thread count that is not an int >= 0 or a memory
            budget that is not a positive int.
    """
    if policy not in POLICIES:
        raise GraphError(
            f"unknown compute policy {policy!r}; expected one of {', '.join(POLICIES)}"
        )
    if intra_op_threads is None:
        cpus = os.cpu_count() or 1
        intra_op_threads = {
            "default": 0,
            "high-performance": cpus,
            "low-power": 1,
            "fallback": 1,
        }[policy]
    if not isinstance(intra_op_threads, int) or intra_op_threads < 0:
        raise GraphError(f"intra_op_threads must be >= 0, got {intra_op_threads!r}")
    if memory_budget is not None and (
        not isinstance(memory_budget, int) or isinstance(memory_budget, bool) or memory_budget < 1
    ):
        raise GraphError(f"memory_budget must be a positive number of bytes, got {memory_budget!r}")
    if cache_dir == "default":
        from pullweights.cache import default_cache_dir

        cache_dir = default_cache_dir()
    return Context(
        policy=policy,
        intra_op_threads=intra_op_threads,
        cache_dir=None if cache_dir is None else Path(cache_dir),
        providers=_providers(policy),
        session_cache=session_cache,
        memory_budget=memory_budget or DEFAULT_BUDGET,
    )
