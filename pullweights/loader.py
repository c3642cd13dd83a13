"""The weight loader: pulls every payload a graph needs, once, zero-copy where it can.

For each distinct :class:`~pullweights.weights.Payload`:

* raw bytes in a local, mappable range -> a read-only numpy view of the file map;
* a cache hit -> read-only memmaps of the cache entry (clean page cache, never private);
* otherwise the raw bytes are read (remote or straddling part files), transformed in a
  worker thread if the payload has a transform, and written to the cache, whose memmaps
  are then used — so the graph holds no private copy of any weight once loading ends.

Without a cache, unmappable or transformed payloads stay in private memory.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from pullweights.errors import PullWeightsError, SourceError
from pullweights.weights import Payload, WeightRef, view_as

__all__ = ["LoadEvent", "ProgressCallback", "WeightLoader"]


@dataclass(frozen=True)
class LoadEvent:
    """Progress of a load: payloads and bytes done out of the total."""

    what: str
    done: int
    total: int
    bytes_done: int
    bytes_total: int
    elapsed: float


ProgressCallback = Callable[[LoadEvent], Any]


class CacheLike(Protocol):
    def get(self, payload: Payload) -> dict[str, np.ndarray] | None: ...
    def writer(self, payload: Payload) -> Any: ...


class WeightLoader:
    """Loads payloads with bounded parallelism; transforms run in worker threads."""

    def __init__(
        self,
        cache: CacheLike | None = None,
        *,
        max_workers: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.cache = cache
        self.progress = progress
        self._sem = asyncio.Semaphore(max_workers or os.cpu_count() or 2)
        # Payloads already pulled by this loader (a graph asks in two passes: weights
        # onnxruntime prepacks, then bound weights; one payload may feed both).
        self._pulled: dict[int, tuple[Payload, dict[str, np.ndarray]]] = {}

    async def load(self, refs: Mapping[str, WeightRef]) -> dict[str, np.ndarray]:
        """Arrays for every reference, by name. Cancelling stops every pending pull."""
        payloads: dict[int, Payload] = {}
        for ref in refs.values():
            payloads.setdefault(id(ref.payload), ref.payload)
        total_bytes = sum(p.length for p in payloads.values())
        done = [0, 0]
        start = time.perf_counter()

        async def one(payload: Payload) -> tuple[int, dict[str, np.ndarray]]:
            pulled = self._pulled.get(id(payload))
            if pulled is not None:
                arrays = pulled[1]
            else:
                async with self._sem:
                    arrays = await self._load_payload(payload)
                self._pulled[id(payload)] = (payload, arrays)
            done[0] += 1
            done[1] += payload.length
            if self.progress is not None:
                event = LoadEvent(
                    payload.label or payload.describe(),
                    done[0],
                    len(payloads),
                    done[1],
                    total_bytes,
                    time.perf_counter() - start,
                )
                result = self.progress(event)
                if asyncio.iscoroutine(result):
                    await result
            return id(payload), arrays

        results = dict(await _gather_or_cancel([one(p) for p in payloads.values()]))
        return {name: results[id(ref.payload)][ref.part] for name, ref in refs.items()}

    async def _load_payload(self, payload: Payload) -> dict[str, np.ndarray]:
        if payload.transform is None:
            assert payload.raw_descriptor is not None
            mapped = payload.source.map(payload.offset, payload.length)
            if mapped is not None:
                return {"data": view_as(mapped, payload.raw_descriptor)}
        if self.cache is not None:
            hit = self.cache.get(payload)
            if hit is not None:
                return hit
        try:
            if payload.transform is None:
                assert payload.raw_descriptor is not None
                return await self._read_raw(payload)
            return await self._transform(payload)
        except PullWeightsError:
            raise
        except OSError as exc:
            raise SourceError(f"{payload.describe()}: {exc}") from exc

    async def _read_raw(self, payload: Payload) -> dict[str, np.ndarray]:
        desc = payload.raw_descriptor
        assert desc is not None
        if self.cache is not None:
            async with self.cache.writer(payload) as w:
                out = w.array("data")
                view = memoryview(out.reshape(-1)).cast("B")
                await payload.source.read_into(payload.offset, view)
                del view
                del out
            assert w.result is not None
            return dict(w.result)
        buf = np.empty(desc.static_shape, dtype=desc.numpy_dtype)
        await payload.source.read_into(payload.offset, memoryview(buf.reshape(-1)).cast("B"))
        return {"data": buf}

    async def _transform(self, payload: Payload) -> dict[str, np.ndarray]:
        transform = payload.transform
        assert transform is not None
        mapped = payload.source.map(payload.offset, payload.length)
        if mapped is not None:
            raw = np.frombuffer(mapped, dtype=np.uint8)
        else:
            raw = np.empty(payload.length, dtype=np.uint8)
            await payload.source.read_into(payload.offset, memoryview(raw))
        arrays = await asyncio.to_thread(transform.apply, raw)
        del raw
        for part, desc in transform.outputs.items():
            arr = arrays.get(part)
            if arr is None or arr.dtype != desc.numpy_dtype or arr.shape != desc.static_shape:
                raise PullWeightsError(
                    f"{payload.describe()}: transform {transform.name} returned "
                    f"{None if arr is None else (arr.dtype, arr.shape)} for part {part!r}, "
                    f"expected {desc}"
                )
        if self.cache is None:
            return arrays
        async with self.cache.writer(payload) as w:
            for part, arr in arrays.items():
                await asyncio.to_thread(w.write, part, arr)
        del arrays
        assert w.result is not None
        return dict(w.result)


async def _gather_or_cancel(coros: list[Any]) -> list[Any]:
    """Like ``asyncio.gather`` but cancels the rest as soon as one fails or we are cancelled."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
