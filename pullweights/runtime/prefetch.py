"""Saved sessions opened before the graph that uses them exists.

A warm load spends its first few tenths of a second in Python — the GGUF header, the
graph build, lowering, the stages' session keys — with the other cores idle, and then
most of its time in onnxruntime opening the saved stages (it packs every weight once more
to find its saved copy; :mod:`~pullweights.runtime.saved`). A stage's key is known only
after lowering, but the keys the last load of the same kind used are remembered
(:mod:`pullweights.cache.plans`, under a *plan key* the caller makes: for an LLM the
architecture, the GGUF's source identities and the load options).

:meth:`SessionPrefetch.start` reads that plan and opens its sessions in worker threads at
once, while the caller builds its graph; the pipeline then takes the opened session of
each stage whose key it computes (:meth:`~SessionPrefetch.take`) and opens or compiles
any other stage as before. :meth:`~SessionPrefetch.finish` keeps this load's sessions as
the plan (when they changed) and closes what was opened and not taken, waiting for the
worker threads: after it, nothing of the prefetch runs or holds memory.

Every planned session is checked first as the pipeline checks a saved session
(:meth:`~pullweights.cache.WeightCache.open_session`). Opens then run one per CPU at a time,
the largest weights first (while the heap holds least else), under the pipeline's budget
for packed copies on the heap (the largest stage's packed bytes; each open holds its
largest weight's, which it packs at once to find the saved copy; gemma3-270m's head
stages opened side by side peaked ~20 MiB higher), each followed by a release of freed
heap memory: qwen2.5-coder-0.5b's warm peak fell from ~203 to ~162 MiB private
(``benchmarks/bench_prefetch.py``). A plan of one session is not prefetched: nothing
opens beside it, and its packing would only overlap the graph build and the tokenizer
(qwen2.5-coder-0.5b as one session: 161-168 -> 169-193 MiB, no faster). A prefetch never
fails a load: an open that fails is left to the stage, which opens it again (or
compiles) and reports what is wrong.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import onnxruntime as ort

from pullweights.cache.plans import PlannedSession
from pullweights.events import Phase, span
from pullweights.runtime.heap import release_free_memory
from pullweights.runtime.saved import MODEL
from pullweights.runtime.threads import joined

if TYPE_CHECKING:
    from pullweights.cache import WeightCache
    from pullweights.runtime.context import Context

__all__ = ["SessionPrefetch"]

log = logging.getLogger("pullweights.runtime")

_Opened = concurrent.futures.Future["ort.InferenceSession | None"]


class SessionPrefetch:
    """The saved sessions one load is expected to open, opening in worker threads.

    Example (what :func:`loaders.load_model` does)::

        prefetch = SessionPrefetch.start(context, plan_key)  # before building the graph
        try:
            graph = await builder.build(outputs, prefetch=prefetch)
        finally:
            if prefetch is not None:
                await prefetch.finish()
    """

    def __init__(self, context: Context, cache: WeightCache, plan_key: str) -> None:
        self.context = context
        self.cache = cache
        self.plan_key = plan_key
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="pullweights-prefetch"
        )
        self._closing = False
        #: True once :meth:`finish` ran.
        self.finished = False
        #: The plan read (None until it is), and the sessions opening for it by key.
        self.planned: list[PlannedSession] | None = None
        self._plan = self._pool.submit(self._read_plan)
        #: This load's sessions in stage order (:meth:`use`), remembered by :meth:`finish`.
        self.used: list[PlannedSession] = []

    @classmethod
    def start(cls, context: Context, plan_key: str) -> SessionPrefetch | None:
        """Start opening the sessions remembered for ``plan_key``; None where saved
        sessions do not apply (no cache, sessions not saved, a provider other than the
        CPU). Returns at once: the plan is read and its sessions open in worker threads."""
        cache = context.cache
        if cache is None or not context.session_cache or not plan_key:
            return None
        if list(context.providers) != ["CPUExecutionProvider"]:
            return None
        return cls(context, cache, plan_key)

    # -- worker threads ---------------------------------------------------------------

    def _read_plan(self) -> dict[str, _Opened]:
        """Read the plan, check every session it names as a load does, and start opening
        those that passed."""
        try:
            planned = self.cache.session_plans.get(self.plan_key) or []
        except (OSError, ValueError) as exc:
            log.debug("session plan of %s cannot be read: %s", self.plan_key, exc)
            planned = []
        self.planned = planned
        if len(planned) < 2:  # one session: see the module docs
            return {}
        budget = _HeapBudget(max(s.nbytes for s in planned))
        checked: dict[str, tuple[PlannedSession, Path]] = {}
        for session in planned:
            if session.key in checked or self._closing:
                continue
            try:
                directory = self.cache.open_session(session.key)
            except Exception as exc:  # the stage checks it again and says what is wrong
                log.debug("saved session %s cannot be prefetched: %s", session.key, exc)
                continue
            if directory is not None:
                checked[session.key] = (session, directory)
        # Largest packing first, while the heap holds least else (the tokenizer and the
        # graph come later): qwen2.5-coder-0.5b warm peak 210-223 MiB private in stage
        # order, 152-176 this way.
        largest_first = sorted(checked.values(), key=lambda c: -c[0].largest)
        return {s.key: self._pool.submit(self._open, s, d, budget) for s, d in largest_first}

    def _open(
        self, planned: PlannedSession, directory: Path, budget: _HeapBudget
    ) -> ort.InferenceSession | None:
        if self._closing:
            return None
        try:
            with budget.hold(planned.largest):
                if self._closing:
                    return None
                with span(Phase.COMPILE, planned.stage, planned.nbytes, stage=planned.stage):
                    session = ort.InferenceSession(
                        str(directory / MODEL),
                        self.context.session_options(),
                        providers=self.context.providers,
                    )
                release_free_memory()  # what packing to find the saved copies left
            return session
        except Exception as exc:  # the stage opens it again and says what is wrong
            log.debug("prefetching saved session %s failed: %s", planned.key, exc)
            return None

    # -- the pipeline's side ----------------------------------------------------------

    async def checked(self) -> None:
        """Wait until the plan is read and its sessions are checked (their opening has
        begun). The checks are Python, and waiting for them before running other Python
        (building the graph) gets them done without competing for the GIL."""
        await asyncio.shield(asyncio.wrap_future(self._plan))

    async def claim(self, key: str) -> asyncio.Future[ort.InferenceSession | None] | None:
        """The opening of the session saved under ``key`` (resolves to the session, or
        to None if it did not open), or None when the plan does not have it. Each
        session is handed out once."""
        opening = await asyncio.wrap_future(self._plan)
        future = opening.pop(key, None)
        if future is None:
            return None
        return asyncio.wrap_future(future)

    def use(self, key: str, stage: str, nbytes: int, largest: int) -> None:
        """Record that this load's stage ``stage`` (``nbytes`` packed, ``largest`` its
        largest weight's) uses the saved session ``key``; call in stage order."""
        self.used.append(PlannedSession(key, stage, nbytes, largest))

    async def finish(self, *, remember: bool = True) -> None:
        """Keep :attr:`used` as the plan (if ``remember`` and it differs from the plan
        read), drop what was opened and not taken, and wait for the worker threads.
        Once only: later calls do nothing."""
        if self.finished:
            return
        self.finished = True
        self._closing = True
        try:
            opening = await asyncio.wrap_future(self._plan)
        except BaseException:
            opening = {}
        for future in opening.values():
            future.cancel()
        await joined(self._pool.shutdown, wait=True)
        for future in opening.values():  # sessions nobody took: closed here
            if not future.cancelled():
                future.exception()
        opening.clear()
        if remember and self.used and self.used != self.planned:
            await joined(self._remember, list(self.used))

    def _remember(self, sessions: Sequence[PlannedSession]) -> None:
        try:
            self.cache.session_plans.put(self.plan_key, sessions)
        except (OSError, ValueError) as exc:
            log.debug("session plan of %s cannot be written: %s", self.plan_key, exc)


class _HeapBudget:
    """At most ``limit`` bytes held at once by worker threads; a request larger than the
    limit goes through alone (the threads' side of :class:`~pullweights.sources.budget.
    ByteBudget`, which serves tasks on the event loop)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: self.used == 0 or self.used + nbytes <= self.limit)
            self.used += nbytes
        try:
            yield
        finally:
            with self._changed:
                self.used -= nbytes
                self._changed.notify_all()
