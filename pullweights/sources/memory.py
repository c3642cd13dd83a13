"""Bytes already in memory as a source (tests, small in-process weights)."""

from __future__ import annotations

import hashlib

from pullweights.errors import GraphError
from pullweights.sources.base import ByteSource

__all__ = ["MemorySource"]


class MemorySource(ByteSource):
    """A source over a bytes-like object; :meth:`map` returns views into it."""

    local = True

    def __init__(self, data: bytes | bytearray | memoryview, name: str = "<memory>") -> None:
        """Raises :class:`~pullweights.errors.GraphError` if ``data`` is not bytes-like."""
        try:
            self._data = memoryview(data).cast("B").toreadonly()
        except TypeError as exc:
            raise GraphError(f"MemorySource: {exc}") from None
        self.size = len(self._data)
        self.name = name
        self.identity = "memory:" + hashlib.sha256(self._data).hexdigest()

    async def read_into(self, offset: int, out: memoryview) -> None:
        self.check_range(offset, len(out))
        out[:] = self._data[offset : offset + len(out)]

    def map(self, offset: int, length: int) -> memoryview | None:
        self.check_range(offset, length)
        return self._data[offset : offset + length]
