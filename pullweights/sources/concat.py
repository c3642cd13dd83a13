"""Several part files read as one: models shipped as ``part00``, ``part01``, ..."""

from __future__ import annotations

import bisect
import hashlib
import os
from collections.abc import Sequence

from pullweights.errors import GraphError
from pullweights.sources.base import ByteSource
from pullweights.sources.file import FileSource

__all__ = ["ConcatSource"]


class ConcatSource(ByteSource):
    """The concatenation, in order, of other sources.

    A range inside one part maps zero-copy; a range that straddles a part boundary cannot
    be one view, so :meth:`map` returns ``None`` and callers read it into a buffer.
    """

    def __init__(self, parts: Sequence[ByteSource], name: str | None = None) -> None:
        """Raises :class:`~pullweights.errors.GraphError` (a ``ValueError``) without parts or
        with a part that is not a :class:`ByteSource`."""
        if not parts:
            raise GraphError("ConcatSource needs at least one part")
        wrong = [p for p in parts if not isinstance(p, ByteSource)]
        if wrong:
            raise GraphError(f"ConcatSource: parts must be ByteSources, got {wrong[0]!r}")
        self.parts = list(parts)
        self._starts: list[int] = []
        total = 0
        for part in self.parts:
            self._starts.append(total)
            total += part.size
        self.size = total
        self.name = name or f"{self.parts[0].name} (+{len(self.parts) - 1} parts)"
        digest = hashlib.sha256("\n".join(p.identity for p in self.parts).encode())
        self.identity = "concat:" + digest.hexdigest()
        self.local = all(p.local for p in self.parts)

    @property
    def model_source(self) -> ByteSource:
        """The parts' model source when they all share one (slices of one file), else
        this source."""
        first = self.parts[0].model_source
        return first if all(p.model_source is first for p in self.parts) else self

    @classmethod
    def from_paths(cls, paths: Sequence[str | os.PathLike[str]]) -> ConcatSource:
        """Open each path as a :class:`FileSource` and join them in the given order."""
        parts: list[FileSource] = []
        try:
            for path in paths:
                parts.append(FileSource(path))
        except BaseException:
            for part in parts:
                part.close()
            raise
        return cls(parts)

    def _locate(self, offset: int) -> int:
        return bisect.bisect_right(self._starts, offset) - 1

    async def read_into(self, offset: int, out: memoryview) -> None:
        self.check_range(offset, len(out))
        pos = 0
        while pos < len(out):
            index = self._locate(offset + pos)
            part = self.parts[index]
            local = offset + pos - self._starts[index]
            take = min(len(out) - pos, part.size - local)
            await part.read_into(local, out[pos : pos + take])
            pos += take

    def map(self, offset: int, length: int) -> memoryview | None:
        self.check_range(offset, length)
        if length == 0:
            return memoryview(b"")
        index = self._locate(offset)
        local = offset - self._starts[index]
        if local + length > self.parts[index].size:
            return None
        return self.parts[index].map(local, length)

    def release(self, offset: int, length: int) -> None:
        end = min(self.size, offset + length)
        pos = max(0, offset)
        while pos < end:
            index = self._locate(pos)
            local = pos - self._starts[index]
            take = min(end - pos, self.parts[index].size - local)
            self.parts[index].release(local, take)
            pos += take

    async def aclose(self) -> None:
        for part in self.parts:
            await part.aclose()
