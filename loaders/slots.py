"""KV cache slots: one sequence's cache each, lent out by a bounded pool.

A :class:`KVSlot` is one sequence's state: a key and a value
:class:`~pullweights.runtime.tensor.Tensor` per layer (of the model's cache descriptor:
``float32[1, kv_heads, context, head_dim]`` today) and the token ids whose keys and values
it holds. The decoder graph has batch 1 (``GroupQueryAttention`` on CPU refuses a batch
with a prompt and a past cache), so concurrent sequences are separate dispatches of the
same compiled graph, each binding its own slot; nothing but the slot changes between them.

A :class:`SlotPool` lends at most ``size`` slots at a time; :meth:`SlotPool.acquire` waits
while every slot is lent, and the slot goes back when the ``async with`` block ends —
normally, by an exception, or because the task was cancelled. Slots are created on first
need; the tensors are zero pages until positions fill, so a slot costs memory only as its
sequence grows, up to ``2 * layers * kv_heads * context * head_dim * 4`` bytes (float32),
and keeps what it touched until the pool is dropped.

Prefix reuse: a slot remembers its tokens after it is returned. :meth:`SlotPool.acquire`
given the prompt picks the free slot holding the longest prefix of it (else one never used,
else the least recently used), and :meth:`KVSlot.reuse` keeps that prefix, so only the rest
of the prompt is prefilled. ``GroupQueryAttention``'s shared-buffer mode writes the next
step at position ``seqlens_k + 1 - T`` and attends up to ``total_sequence_length``: rows past
the kept prefix are stale but never read, so rewinding is bookkeeping alone.

Example::

    async with model.slots.acquire(prompt) as slot:
        kept = slot.reuse(prompt)
        logits = await model.forward(prompt[kept:], slot=slot)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import numpy as np

from pullweights import Tensor, TensorDescriptor
from pullweights.errors import ComputeError

__all__ = ["KVSlot", "SlotPool", "common_prefix"]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n], np.int64) != np.asarray(b[:n], np.int64))
    return int(diff[0]) if diff.size else n


class KVSlot:
    """One sequence's KV cache and the tokens it holds.

    Attributes:
        index: the slot's number in its pool (``-1`` outside a pool).
        tokens: the token ids at positions ``0 .. position - 1`` of the cache.
        inputs: the caches by graph input name (``past_key.{i}``, ``past_value.{i}``).
        outputs: the same tensors by output name (``present_*``): bound as both, the
            graph appends in place.
    """

    def __init__(self, descriptor: TensorDescriptor, n_layers: int, index: int = -1) -> None:
        """Allocate (as zero pages) the caches of ``n_layers`` layers of ``descriptor``."""
        self.index = index
        self.descriptor = descriptor
        self.tokens: list[int] = []
        caches = {
            f"{kind}.{layer}": Tensor.create(descriptor)
            for layer in range(n_layers)
            for kind in ("key", "value")
        }
        self.inputs: dict[str, Tensor] = {f"past_{name}": t for name, t in caches.items()}
        self.outputs: dict[str, Tensor] = {f"present_{name}": t for name, t in caches.items()}
        #: Held for each step, so two steps on one slot never interleave.
        self.lock = asyncio.Lock()
        self._used = 0  # pool clock of the last release (least recently used goes first)

    @property
    def position(self) -> int:
        """Tokens currently in the cache."""
        return len(self.tokens)

    @property
    def nbytes(self) -> int:
        """Bytes the caches reserve (only touched pages use memory)."""
        return sum(t.descriptor.nbytes for t in self.inputs.values())

    def reset(self) -> None:
        """Forget every cached position (the next step is a new prompt)."""
        self.tokens.clear()

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` positions (the next step writes at ``length``)."""
        if not 0 <= length <= len(self.tokens):
            raise ComputeError(f"KVSlot.truncate({length}): the slot holds {len(self.tokens)}")
        del self.tokens[length:]

    def reuse(self, prompt: Sequence[int]) -> int:
        """Keep the longest cached prefix of ``prompt`` that leaves at least one token to
        run (its logits are needed), drop the rest; returns how many tokens are kept."""
        kept = min(common_prefix(self.tokens, prompt), max(len(prompt) - 1, 0))
        self.truncate(kept)
        return kept

    def __repr__(self) -> str:
        return f"KVSlot({self.index}, position={self.position})"


class SlotPool:
    """At most ``size`` :class:`KVSlot` lent at a time; :meth:`acquire` waits for a free one.

    Attributes:
        size: how many slots may exist (and run) at once.
        descriptor: one layer's key (or value) cache.
        n_layers: layers per slot.
    """

    def __init__(self, descriptor: TensorDescriptor, n_layers: int, size: int = 1) -> None:
        if size < 1:
            raise ComputeError(f"SlotPool: size must be >= 1, got {size}")
        self.size = size
        self.descriptor = descriptor
        self.n_layers = n_layers
        self._slots: list[KVSlot] = []
        self._free: list[KVSlot] = []
        self._clock = 0
        self._waiting = 0
        #: The most slots lent at one time so far.
        self.peak_in_use = 0
        self._changed = asyncio.Condition()

    @property
    def slot_bytes(self) -> int:
        """Bytes one slot reserves: ``2 * layers * kv_heads * context * head_dim * itemsize``."""
        return 2 * self.n_layers * self.descriptor.nbytes

    @property
    def created(self) -> int:
        """Slots allocated so far."""
        return len(self._slots)

    @property
    def in_use(self) -> int:
        """Slots lent out now."""
        return len(self._slots) - len(self._free)

    @property
    def waiting(self) -> int:
        """Callers waiting in :meth:`acquire` for a slot."""
        return self._waiting

    @property
    def cached_tokens(self) -> int:
        """Tokens held by the slots (lent or free)."""
        return sum(slot.position for slot in self._slots)

    def reset(self) -> None:
        """Forget the tokens of every free slot (no cached prefix is reused after this)."""
        for slot in self._free:
            slot.reset()

    @asynccontextmanager
    async def acquire(self, prompt: Sequence[int] = ()) -> AsyncIterator[KVSlot]:
        """Lend a slot for the ``async with`` block, waiting while all are lent.

        Among free slots, the one whose tokens share the longest prefix with ``prompt``
        wins; without any match, a new slot (while fewer than ``size`` exist), else the
        least recently used. The slot keeps its tokens: call :meth:`KVSlot.reuse` or
        :meth:`KVSlot.reset` before the first step.
        """
        async with self._changed:
            self._waiting += 1
            try:
                await self._changed.wait_for(
                    lambda: bool(self._free) or len(self._slots) < self.size
                )
            finally:
                self._waiting -= 1
            slot = self._pick(prompt)
            self.peak_in_use = max(self.peak_in_use, self.in_use)
        try:
            yield slot
        finally:
            await self._release(slot)

    def _pick(self, prompt: Sequence[int]) -> KVSlot:
        scored = [(common_prefix(s.tokens, prompt), -s._used, s) for s in self._free]
        best = max(scored, key=lambda item: item[:2], default=None)
        if best is None or (best[0] == 0 and len(self._slots) < self.size):
            slot = KVSlot(self.descriptor, self.n_layers, index=len(self._slots))
            self._slots.append(slot)
            return slot
        self._free.remove(best[2])
        return best[2]

    async def _release(self, slot: KVSlot) -> None:
        # Shielded: a release that a second cancellation interrupted would lose the slot.
        await asyncio.shield(self._put_back(slot))

    async def _put_back(self, slot: KVSlot) -> None:
        async with self._changed:
            self._clock += 1
            slot._used = self._clock
            self._free.append(slot)
            self._changed.notify_all()
