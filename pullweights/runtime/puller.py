"""The weight puller: brings every payload a graph needs to its final place, once.

For each distinct :class:`~pullweights.weights.Payload`:

* raw bytes in a local, mappable range -> a read-only numpy view of the file map;
* a cache hit -> read-only memmaps of the cache entry (clean page cache, never private);
* otherwise the raw bytes are read (remote or straddling part files), transformed in a
  worker thread if the payload has a transform, and written to the cache, whose memmaps
  are then used — so the graph holds no private copy of any weight once loading ends.

Without a cache, unmappable or transformed payloads stay in private memory.

Payloads are pulled lowest ``priority`` first (the pipeline gives each stage's
initializers, then its bound weights, the stage's place in the graph), in the order they
are asked for among equals, at most ``workers`` at a time, and the bytes in flight —
read buffers and transform outputs not yet in their final place — are bounded by
``budget`` bytes (a payload larger than the budget goes alone). A payload asked for
twice, by two stages or two passes, is pulled once. Every step is reported as a
:mod:`pullweights.events` span (``fetch``, ``transform``, ``cache-write``) and, per
payload, to the ``progress`` callback.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from pullweights.cache.index import RunningDigest
from pullweights.cache.store import EntryVanished
from pullweights.errors import PullWeightsError, SourceError
from pullweights.events import Phase, Progress, ProgressCallback, span
from pullweights.runtime.threads import joined
from pullweights.sources.budget import ByteBudget
from pullweights.weights import Payload, Transform, WeightRef, view_as

if TYPE_CHECKING:
    from pullweights.cache import WeightCache
    from pullweights.cache.writer import EntryWriter

__all__ = ["DEFAULT_BUDGET", "WeightPuller"]

#: Default bound on bytes in flight (read buffers + transform outputs).
DEFAULT_BUDGET = 256 << 20
#: Input + output bytes of one row group of a transform streamed into the cache.
ROW_GROUP_BYTES = 16 << 20

Arrays = dict[str, np.ndarray]


class WeightPuller:
    """Pulls payloads for one load with bounded parallelism and bytes in flight.

    Args:
        cache: the weight cache (None: transformed weights stay in private memory).
        workers: payloads pulled at once (default: the number of CPUs).
        budget: bytes in flight at most (default :data:`DEFAULT_BUDGET`).
        progress: called after every payload (may be a coroutine function).
    """

    def __init__(
        self,
        cache: WeightCache | None = None,
        *,
        workers: int | None = None,
        budget: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.cache = cache
        self.progress = progress
        self._slots = ByteBudget(workers or os.cpu_count() or 2)  # one each
        self._budget = ByteBudget(budget or DEFAULT_BUDGET)
        self._pulls: dict[int, asyncio.Future[Arrays]] = {}
        self._keep: dict[int, Payload] = {}  # ids stay valid while their futures are kept
        self._expected: dict[int, int] = {}
        self._done = 0
        self._bytes_done = 0
        self._start = time.perf_counter()
        #: Payloads served by the cache / transformed and stored by this puller.
        self.cache_hits = 0
        self.transformed = 0

    def expect(self, refs: Iterable[WeightRef]) -> None:
        """Announce weights that will be pulled, so progress reports the whole load."""
        for ref in refs:
            self._expected.setdefault(id(ref.payload), ref.payload.length)

    @property
    def bytes_total(self) -> int:
        """Bytes of every payload announced or pulled so far."""
        return sum(self._expected.values())

    async def pull(
        self, refs: Mapping[str, WeightRef], *, stage: str = "", priority: int = 0
    ) -> Arrays:
        """Arrays for every reference, by name; payloads not yet asked for are pulled at
        ``priority`` (lower first). Cancelling stops this call's pending pulls (a payload
        another call also waits for is pulled on for it)."""
        self.expect(refs.values())
        futures: dict[int, asyncio.Future[Arrays]] = {}
        for ref in refs.values():
            key = id(ref.payload)
            if key not in futures:
                futures[key] = self._future(ref.payload, stage, priority)
        waiting = list(futures.values())
        try:
            await asyncio.gather(*waiting)
        except BaseException:
            await _cancel_and_wait(waiting)
            raise
        return {name: futures[id(ref.payload)].result()[ref.part] for name, ref in refs.items()}

    async def aclose(self) -> None:
        """Cancel every pull still running and wait until each has ended (its worker
        thread finished, its cache writer discarded)."""
        await _cancel_and_wait(list(self._pulls.values()))

    def _future(self, payload: Payload, stage: str, priority: int) -> asyncio.Future[Arrays]:
        key = id(payload)
        future = self._pulls.get(key)
        if future is None or (future.done() and future.cancelled()):
            future = asyncio.ensure_future(self._pull_one(payload, stage, priority))
            future.add_done_callback(_retrieve)
            self._pulls[key] = future
            self._keep[key] = payload
        return future

    async def _pull_one(self, payload: Payload, stage: str, priority: int) -> Arrays:
        async with self._slots.hold(1, priority):
            try:
                arrays = await self._load(payload, stage)
            except EntryVanished:  # another process dropped it at once: make it again
                arrays = await self._load(payload, stage)
        self._done += 1
        self._bytes_done += payload.length
        if self.progress is not None:
            event = Progress(
                payload.label or payload.describe(),
                self._done,
                max(self._done, len(self._expected)),
                self._bytes_done,
                max(self._bytes_done, self.bytes_total),
                time.perf_counter() - self._start,
            )
            result = self.progress(event)
            if asyncio.iscoroutine(result):
                await result
        return arrays

    async def _load(self, payload: Payload, stage: str) -> Arrays:
        if payload.transform is None:
            assert payload.raw_descriptor is not None
            mapped = payload.source.map(payload.offset, payload.length)
            if mapped is not None:
                return {"data": view_as(mapped, payload.raw_descriptor)}
        if self.cache is not None:
            hit = await joined(self.cache.get, payload)
            if hit is not None:
                self.cache_hits += 1
                return hit
        try:
            if payload.transform is None:
                return await self._read_raw(payload, stage)
            return await self._transform(payload, stage)
        except PullWeightsError:
            raise
        except OSError as exc:
            raise SourceError(f"{payload.describe()}: {exc}") from exc

    async def _read_raw(self, payload: Payload, stage: str) -> Arrays:
        desc = payload.raw_descriptor
        assert desc is not None
        name = payload.label or payload.describe()
        if self.cache is not None:
            async with self.cache.writer(payload) as w:
                out = w.array("data")
                view = memoryview(out.reshape(-1)).cast("B")
                with span(Phase.FETCH, name, payload.length, stage=stage):
                    await payload.source.read_into(payload.offset, view)
                del view
                del out
            assert w.result is not None
            return dict(w.result)
        async with self._budget.hold(payload.length):
            buf = np.empty(desc.static_shape, dtype=desc.numpy_dtype)
            with span(Phase.FETCH, name, payload.length, stage=stage):
                await payload.source.read_into(
                    payload.offset, memoryview(buf.reshape(-1)).cast("B")
                )
        return {"data": buf}

    async def _transform(self, payload: Payload, stage: str) -> Arrays:
        transform = payload.transform
        assert transform is not None
        if self.cache is not None and transform.rows is not None:
            return await self._transform_rows(payload, stage)
        name = payload.label or payload.describe()
        mapped = payload.source.map(payload.offset, payload.length)
        out_bytes = sum(d.nbytes for d in transform.outputs.values())
        in_flight = out_bytes + (0 if mapped is not None else payload.length)
        async with self._budget.hold(in_flight):
            if mapped is not None:
                raw = np.frombuffer(mapped, dtype=np.uint8)
            else:
                raw = np.empty(payload.length, dtype=np.uint8)
                with span(Phase.FETCH, name, payload.length, stage=stage):
                    await payload.source.read_into(payload.offset, memoryview(raw))
                if self.cache is not None:
                    # Now that its content is known it may be cached already (the same
                    # bytes under another URL or path): nothing to transform or store.
                    hit = await joined(self.cache.get, payload, raw)
                    if hit is not None:
                        self.cache_hits += 1
                        return hit
            with span(Phase.TRANSFORM, name, payload.length, stage=stage):
                arrays = await joined(transform.apply, raw)
            del raw
            payload.source.release(payload.offset, payload.length)
            _check_outputs(payload, arrays)
            self.transformed += 1
            if self.cache is None:
                return arrays
            with span(Phase.CACHE_WRITE, name, out_bytes, stage=stage):
                async with self.cache.writer(payload) as w:
                    for part, arr in arrays.items():
                        await joined(w.write, part, arr)
            del arrays
        assert w.result is not None
        return dict(w.result)

    async def _transform_rows(self, payload: Payload, stage: str) -> Arrays:
        """Transform in row groups, each written to its place in the cache entry before
        the next is made: at most one group's input and output are in memory."""
        transform = payload.transform
        assert transform is not None and transform.rows is not None and self.cache is not None
        n_rows, row_bytes = transform.rows
        name = payload.label or payload.describe()
        out_row = {p: d.nbytes // max(1, n_rows) for p, d in transform.outputs.items()}
        per_row = row_bytes + sum(out_row.values())
        group = max(1, min(n_rows, ROW_GROUP_BYTES // max(1, per_row)))
        mapped = payload.source.map(payload.offset, payload.length)
        raw_view = None if mapped is None else np.frombuffer(mapped, dtype=np.uint8)
        buffer = None if mapped is not None else np.empty(group * row_bytes, np.uint8)
        async with self._budget.hold(group * per_row):
            first: np.ndarray | None = None
            if buffer is not None:
                # Fetched bytes: they may be cached already from another URL (found by
                # their first rows, confirmed by the digest of all): nothing to transform.
                first = buffer[: min(n_rows, group) * row_bytes]
                with span(Phase.FETCH, name, first.size, stage=stage):
                    await payload.source.read_into(payload.offset, memoryview(first))
                candidate = await joined(self.cache.candidate, payload, first)
                if candidate is not None:
                    hit = await self._confirm(payload, candidate, first, buffer)
                    if hit is not None:
                        self.cache_hits += 1
                        return hit
                    first = None  # the buffer was reused: fetch the first rows again
            async with self.cache.writer(payload) as w:
                for r0 in range(0, n_rows, group):
                    r1 = min(n_rows, r0 + group)
                    if raw_view is not None:
                        raw = raw_view[r0 * row_bytes : r1 * row_bytes]
                    elif r0 == 0 and first is not None:
                        raw = first
                    else:
                        assert buffer is not None
                        raw = buffer[: (r1 - r0) * row_bytes]
                        with span(Phase.FETCH, name, raw.size, stage=stage):
                            await payload.source.read_into(
                                payload.offset + r0 * row_bytes, memoryview(raw)
                            )
                    await joined(_transform_group, transform, w, raw, r0, r1, out_row, name, stage)
                    del raw
                    # The raw rows are done with: their file pages leave our resident set.
                    payload.source.release(payload.offset + r0 * row_bytes, (r1 - r0) * row_bytes)
            del buffer, raw_view
        self.transformed += 1
        assert w.result is not None
        return dict(w.result)

    async def _confirm(
        self, payload: Payload, candidate: str, first: np.ndarray, buffer: np.ndarray
    ) -> Arrays | None:
        """Fetch and hash the rest of ``payload`` (after its ``first`` bytes) through
        ``buffer``; the cache entry ``candidate`` if the digest of all its bytes is that
        entry's."""
        assert self.cache is not None
        running = RunningDigest()
        await joined(running.update, first)
        for start in range(first.size, payload.length, buffer.size):
            piece = buffer[: min(buffer.size, payload.length - start)]
            await payload.source.read_into(payload.offset + start, memoryview(piece))
            await joined(running.update, piece)
        return await joined(self.cache.confirm, payload, running.value, candidate)


def _transform_group(
    transform: Transform,
    writer: EntryWriter,
    raw: np.ndarray,
    start: int,
    stop: int,
    out_row: Mapping[str, int],
    name: str,
    stage: str,
) -> None:
    """Rows ``start:stop`` transformed and written to their place (in a worker thread)."""
    if writer.key is None:
        writer.feed_raw(raw)  # fetched bytes: the entry's content key is made from them
    with span(Phase.TRANSFORM, name, raw.size, stage=stage):
        pieces = transform.apply_rows(raw, start, stop)
    out_bytes = (stop - start) * sum(out_row.values())
    with span(Phase.CACHE_WRITE, name, out_bytes, stage=stage):
        for part, row_nbytes in out_row.items():
            piece = pieces[part]
            if piece.nbytes != (stop - start) * row_nbytes:
                raise PullWeightsError(
                    f"transform {transform.name} returned {piece.nbytes} bytes of part "
                    f"{part!r} for rows {start}:{stop}, expected {(stop - start) * row_nbytes}"
                )
            writer.write_at(part, start * row_nbytes, piece)


def _check_outputs(payload: Payload, arrays: Mapping[str, np.ndarray]) -> None:
    transform = payload.transform
    assert transform is not None
    for part, desc in transform.outputs.items():
        arr = arrays.get(part)
        if arr is None or arr.dtype != desc.numpy_dtype or arr.shape != desc.static_shape:
            raise PullWeightsError(
                f"{payload.describe()}: transform {transform.name} returned "
                f"{None if arr is None else (arr.dtype, arr.shape)} for part {part!r}, "
                f"expected {desc}"
            )


async def _cancel_and_wait(futures: list[asyncio.Future[Arrays]]) -> None:
    pending = [f for f in futures if not f.done()]
    for f in pending:
        f.cancel()
    if pending:
        await asyncio.wait(pending)


def _retrieve(future: asyncio.Future[Arrays]) -> None:
    """Mark a pull's exception as retrieved (the awaiting call re-raises it)."""
    if not future.cancelled():
        future.exception()
