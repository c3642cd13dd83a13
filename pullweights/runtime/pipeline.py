"""The compile pipeline: every stage compiles as soon as its own weights are in place.

For a lowered graph of stages ``s0, s1, ...`` one load runs, all at once:

* the puller fetches and transforms the weights onnxruntime prepacks, stage by stage —
  the stages with the most packed bytes first, graph order among equals, so the largest
  compiles run while the least else is held — under the context's memory budget; then
  each stage's bound weights;
* a stage whose initializers have all arrived is compiled in a worker thread while later
  stages' bytes are still being read, downloaded or transformed; onnxruntime's heap
  copies of packed weights never pile up: compiles and re-opens share a budget of the
  largest stage's packed bytes (a compile holds its stage's, a re-open its largest
  weight's, as it packs one weight at a time);
* with a weight cache, a stage compiled for the first time saves its packed weights
  (:mod:`~pullweights.runtime.saved`) and is re-opened over the saved, memory-mapped
  file, its heap copies freed; a stage saved earlier is opened from its saved session
  directly.

Cancelling (or a failure of any stage) cancels every other stage and pull and waits for
their worker threads, so when the error reaches the caller nothing of the load is still
running and no staging file is left behind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from pullweights.errors import CacheError, CompileError
from pullweights.events import Phase, ProgressCallback, mark, span
from pullweights.graph.lowering import PLACEHOLDER, LoweredGraph, LoweredStage
from pullweights.runtime.graph import CompiledStage, Graph, explain
from pullweights.runtime.heap import release_free_memory
from pullweights.runtime.prefetch import SessionPrefetch
from pullweights.runtime.puller import WeightPuller
from pullweights.runtime.saved import MODEL, SessionSaver, saved_session_store, session_key
from pullweights.runtime.threads import joined
from pullweights.sources.budget import ByteBudget

if TYPE_CHECKING:
    from pullweights.cache import WeightCache
    from pullweights.runtime.context import Context

__all__ = ["compile_graph"]

log = logging.getLogger("pullweights.runtime")


async def compile_graph(
    context: Context,
    lowered: LoweredGraph,
    *,
    progress: ProgressCallback | None = None,
    on_compile_start: Callable[[], object] | None = None,
    prefetch: SessionPrefetch | None = None,
) -> Graph:
    """Pull ``lowered``'s weights and compile its stages (see the module docs); cancellable.

    ``on_compile_start`` is called once, on the event loop, when every stage has the
    weights it compiles from (only compiling, and bound weights, are left). A stage whose
    saved session ``prefetch`` opened takes it from there (:mod:`.prefetch`); the saved
    sessions this load used are recorded in it, in stage order.

    Raises:
        CompileError: onnxruntime refused a stage.
        SourceError, FetchError, IntegrityError, CacheError: a weight could not be pulled.
    """
    puller = WeightPuller(context.cache, budget=context.memory_budget, progress=progress)
    for stage in lowered.stages:
        puller.expect(stage.initializer_weights.values())
    for stage in lowered.stages:
        puller.expect(stage.bound_weights.values())
    run = _Load(context, puller, lowered, on_compile_start, prefetch)
    lengths = {id(r.payload): r.payload.length for r in lowered.weights.values()}
    total = sum(lengths.values())
    with span(Phase.LOAD, "", total):
        tasks = [asyncio.ensure_future(run.stage(stage)) for stage in lowered.stages]
        try:
            compiled = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            await puller.aclose()
            raise
    if prefetch is not None:
        for stage in lowered.stages:
            if (key := run.stage_keys.get(id(stage))) is not None:
                prefetch.use(key, stage.name, stage.prepacked_bytes, stage.largest_prepacked)
    graph = Graph(lowered, compiled)
    graph.cache_hits, graph.transformed = puller.cache_hits, puller.transformed
    graph.prefetched = run.prefetched
    if context.cache is not None:  # the model record: what this load used
        sessions = list(run.stage_keys.values())
        await joined(context.cache.register_load, lowered.weights.values(), sessions)
    mark(Phase.READY, "graph", total)
    return graph


class _Load:
    """One compile of one graph: the shared puller, the lock that lets one stage at a
    time hold packed copies on the heap, and the slots for opening saved stages."""

    def __init__(
        self,
        context: Context,
        puller: WeightPuller,
        lowered: LoweredGraph,
        on_compile_start: Callable[[], object] | None,
        prefetch: SessionPrefetch | None = None,
    ) -> None:
        self.context = context
        self.puller = puller
        self.prefetch = prefetch
        #: Bytes of packed copies onnxruntime may hold on the heap at once, over stages.
        self.heap = ByteBudget(max((s.prepacked_bytes for s in lowered.stages), default=1))
        self.opening = asyncio.Semaphore(max(1, os.cpu_count() or 1))
        self.unpulled = len(lowered.stages)
        # Largest compiles first, while the least else is held (graph order among equals):
        # qwen2.5-coder-0.5b cold peak 296-329 MiB private in graph order, 239-259 this way.
        ranked = sorted(lowered.stages, key=lambda s: -s.prepacked_bytes)
        self.index = {id(stage): i for i, stage in enumerate(ranked)}
        self.on_compile_start = on_compile_start
        #: The key of the saved session each stage opened or saved, by ``id(stage)``.
        self.stage_keys: dict[int, str] = {}
        self.prefetched = 0  # stages that took a prefetched session
        # Payloads only ever packed (no stage binds them) and the stages packing them: once
        # all those stages are saved, their cache entries are a second copy of bytes the
        # saved sessions hold (see _drop_packed_only).
        self.packers: dict[int, int] = {}
        bound = {id(r.payload) for s in lowered.stages for r in s.bound_weights.values()}
        for stage in lowered.stages:
            for pid in {id(r.payload) for r in stage.initializer_weights.values()} - bound:
                self.packers[pid] = self.packers.get(pid, 0) + 1

    def _priority(self, stage: LoweredStage) -> int:
        """Where ``stage``'s pulls go in the load's order (see the module docs), each
        stage's initializers (which its compile waits for) before its bound weights."""
        return 2 * self.index[id(stage)]

    def _pulled(self) -> None:
        """One more stage has its initializers (or needs none): once all have, only
        compiling is left."""
        self.unpulled -= 1
        if self.unpulled == 0 and self.on_compile_start is not None:
            self.on_compile_start()

    async def stage(self, stage: LoweredStage) -> CompiledStage:
        """Pull, compile (or open saved) and bind one stage."""
        store = saved_session_store(self.context, stage)
        key: str | None = None
        if store is not None:  # a local file not indexed yet is hashed: cheaper than pulling
            key = await joined(session_key, self.context, stage)
            if key is not None and (compiled := await self._saved(stage, store, key)):
                return compiled
        saver: SessionSaver | None = None
        try:
            initial = await self.puller.pull(
                stage.initializer_weights, stage=stage.name, priority=self._priority(stage)
            )
            if store is not None and key is None:
                # A remote weight's content is known once fetched: the same model may
                # have been saved from another URL.
                key = await joined(session_key, self.context, stage)
                if key is not None and (compiled := await self._saved(stage, store, key)):
                    return compiled
            self._pulled()
            if store is not None and key is not None and store.writable:
                saver = SessionSaver(store, key)
            bound = asyncio.ensure_future(self._bound(stage))
            try:
                loaded = {**initial, **stage.large_constants}
                del initial
                compiled = await self._compile(stage, loaded, saver)
                del loaded
                compiled.weights = await bound
            except BaseException:
                bound.cancel()
                await asyncio.wait([bound])
                raise
        except BaseException:
            if saver is not None:
                saver.abort()
            raise
        if store is not None and saver is not None and compiled.save is not None:
            store.mark_in_use(saver.key, compiled.session)
            self.stage_keys[id(stage)] = saver.key
            await self._drop_packed_only(stage)
        return compiled

    async def _saved(
        self, stage: LoweredStage, store: WeightCache, key: str
    ) -> CompiledStage | None:
        """The stage from its saved session ``key`` (prefetched, or opened here), or None
        if there is none usable."""
        claimed = None if self.prefetch is None else await self.prefetch.claim(key)
        compiled = None
        if claimed is not None:
            compiled = await self._open_saved(stage, claimed)
            self.prefetched += compiled is not None
        if compiled is None:
            directory = await joined(store.open_session, key)
            if directory is None:
                return None
            compiled = await self._open_saved(stage, directory / MODEL)
        if compiled is not None:
            store.mark_in_use(key, compiled.session)
            self.stage_keys[id(stage)] = key
            return compiled
        try:
            store.remove(key)
        except CacheError as exc:
            log.warning("cannot remove the unusable saved session %s: %s", key, exc)
        return None

    async def _drop_packed_only(self, stage: LoweredStage) -> None:
        """Remove the cache entries of payloads that only saved stages pack, when their
        source is local: the saved sessions hold those bytes (onnxruntime needs them there,
        next to the packed copies), and should a session be lost, the weight is made again
        from the file. Remote payloads keep their entries (re-reading means downloading)."""
        cache = self.context.cache
        if cache is None:
            return
        drop = []
        for payload in {
            id(r.payload): r.payload for r in stage.initializer_weights.values()
        }.values():
            left = self.packers.get(id(payload))
            if left is None:
                continue
            self.packers[id(payload)] = left - 1
            if left == 1 and payload.source.local and (key := cache.content_key(payload)):
                drop.append(key)
        for key in drop:
            try:
                await joined(cache.remove, key)
            except CacheError as exc:
                log.warning("cannot remove cache entry %s: %s", key, exc)

    async def _bound(self, stage: LoweredStage) -> dict[str, np.ndarray]:
        bound = await self.puller.pull(
            stage.bound_weights, stage=stage.name, priority=self._priority(stage) + 1
        )
        return {**bound, **stage.bound_constants}

    async def _open_saved(
        self, stage: LoweredStage, model: Path | asyncio.Future[ort.InferenceSession | None]
    ) -> CompiledStage | None:
        """The stage from its saved session — the model's path, or a prefetch's opening
        of it — or None if it cannot be used (onnxruntime rejects it, or anything else
        fails: compiling from the weights then says what is wrong; a prefetch's opening
        that failed is only None, and the caller opens the path). Opening packs one
        weight at a time to find its saved copy, so saved stages open side by side, one
        per CPU."""
        self._pulled()
        bound = asyncio.ensure_future(self._bound(stage))
        try:
            if not isinstance(model, Path):
                session = await model
                if session is None:  # the prefetch could not open it
                    bound.cancel()
                    await asyncio.wait([bound])
                    self.unpulled += 1
                    return None
            else:
                so = self.context.session_options()
                async with self.opening, self.heap.hold(stage.largest_prepacked):
                    with span(Phase.COMPILE, stage.name, stage.prepacked_bytes, stage=stage.name):
                        session = await joined(self._create, str(model), so)
                    await joined(release_free_memory)  # what packing to find the copies left
            weights = await bound
        except asyncio.CancelledError:
            bound.cancel()
            await asyncio.wait([bound])
            raise
        except Exception as exc:
            bound.cancel()
            await asyncio.wait([bound])
            self.unpulled += 1  # it will pull its weights after all
            where = model.parent if isinstance(model, Path) else stage.name
            log.warning("saved session %s is unusable and is removed: %s", where, exc)
            return None
        return CompiledStage(stage, session, weights, from_saved=True)

    async def _compile(
        self, stage: LoweredStage, loaded: Mapping[str, np.ndarray], saver: SessionSaver | None
    ) -> CompiledStage:
        """Create the stage's session from its loaded initializers — with ``saver``,
        saving it, then re-opening it over the saved files."""
        if saver is not None:
            compiled = await self._compile_saving(stage, loaded, saver)
            if compiled is not None:
                return compiled
        keepalive: list[Any] = []
        so = self.context.session_options()
        for name, arr in stage.initializer_arrays(loaded).items():
            value = ort.OrtValue.ortvalue_from_numpy(arr)
            keepalive.append((arr, value))  # onnxruntime does not own these buffers
            so.add_initializer(name, value)
        data = stage.model.SerializeToString()
        async with self.heap.hold(stage.prepacked_bytes):
            with span(Phase.COMPILE, stage.name, stage.prepacked_bytes, stage=stage.name):
                session = await self._guarded(stage, self._create_placeholder, data, so)
        return CompiledStage(stage, session, {}, keepalive)

    async def _compile_saving(
        self, stage: LoweredStage, loaded: Mapping[str, np.ndarray], saver: SessionSaver
    ) -> CompiledStage | None:
        """Compile with saving on; None if saving failed (compile without it then).

        Creating the session holds the stage's packed bytes of the heap budget: its packed
        copies are dropped before they are given back (when re-opening), so the next
        stage compiles while this one is saved; re-opening over the mapped files holds
        its largest weight's bytes.
        """
        nbytes = stage.prepacked_bytes
        remap = self.context.remap_saved
        session: ort.InferenceSession | None = None
        try:
            staged = await joined(saver.stage, stage, loaded)
            so = self.context.session_options()
            saver.configure(so)
            async with self.heap.hold(nbytes):
                with span(Phase.COMPILE, stage.name, nbytes, stage=stage.name):
                    session = await self._guarded(stage, self._create, str(staged), so)
                if remap:
                    session = None  # the only reference: its packed copies are freed here
                    await joined(release_free_memory)
            with span(Phase.SAVE, stage.name, nbytes, stage=stage.name):
                entry = await joined(saver.finish)
        except (CompileError, asyncio.CancelledError):
            raise
        except Exception as exc:  # saving is an optimization: compile without it
            log.warning("compiling stage %r without saving it: %s", stage.name, exc)
            saver.abort()
            return None
        if session is not None:
            return CompiledStage(stage, session, {}, save=saver.done)
        async with self.heap.hold(stage.largest_prepacked):
            with span(Phase.COMPILE, f"{stage.name} (mapped)", nbytes, stage=stage.name):
                reopened = await self._guarded(
                    stage, self._create, str(entry / MODEL), self.context.session_options()
                )
            await joined(release_free_memory)
        return CompiledStage(stage, reopened, {}, save=saver.done)

    def _create(self, path: str, so: ort.SessionOptions) -> ort.InferenceSession:
        return ort.InferenceSession(path, so, providers=self.context.providers)

    def _create_placeholder(self, data: bytes, so: ort.SessionOptions) -> ort.InferenceSession:
        # Loaded from a path so the placeholder external data resolves next to the model.
        with tempfile.TemporaryDirectory(prefix="pullweights-") as tmp:
            model_path = os.path.join(tmp, "model.onnx")
            with open(model_path, "wb") as f:
                f.write(data)
            open(os.path.join(tmp, PLACEHOLDER), "wb").close()
            return self._create(model_path, so)

    async def _guarded(
        self, stage: LoweredStage, create: Callable[..., ort.InferenceSession], *args: Any
    ) -> ort.InferenceSession:
        """``create(*args)`` in a worker thread, onnxruntime's errors as CompileError."""
        try:
            return await joined(create, *args)
        except Exception as exc:
            if type(exc).__module__.startswith("onnxruntime"):
                where = f"stage {stage.name!r} of " if stage.name else ""
                raise CompileError(
                    f"onnxruntime could not compile {where}the graph: {explain(exc, stage.origins)}"
                ) from exc
            raise
