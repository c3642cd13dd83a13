"""A byte range of another source, read as a source of its own."""

from __future__ import annotations

from pullweights.errors import GraphError
from pullweights.sources.base import ByteSource

__all__ = ["SliceSource"]


class SliceSource(ByteSource):
    """Bytes ``[offset, offset + length)`` of ``parent``: what several tensors of one file
    laid end to end are made of (a :class:`~pullweights.sources.ConcatSource` of slices).

    Reads, maps and releases go to the parent; closing a slice leaves the parent open
    (whoever opened it closes it). Its :attr:`model_source` is the parent's.
    """

    def __init__(self, parent: ByteSource, offset: int, length: int) -> None:
        """Raises :class:`~pullweights.errors.GraphError` (a ``ValueError``) for a parent
        that is not a :class:`ByteSource`, and
        :class:`~pullweights.errors.SourceError` for a range outside it."""
        if not isinstance(parent, ByteSource):
            raise GraphError(f"SliceSource: parent must be a ByteSource, got {parent!r}")
        parent.check_range(offset, length)
        self.parent = parent
        self.start = offset
        self.size = length
        self.name = f"{parent.name}[{offset}:{offset + length}]"
        self.identity = f"{parent.identity}[{offset}:{offset + length}]"
        self.local = parent.local

    @property
    def parts(self) -> list[ByteSource]:
        """The parent, for walks over the files behind a source."""
        return [self.parent]

    @property
    def model_source(self) -> ByteSource:
        return self.parent.model_source

    async def read_into(self, offset: int, out: memoryview) -> None:
        self.check_range(offset, len(out))
        await self.parent.read_into(self.start + offset, out)

    def map(self, offset: int, length: int) -> memoryview | None:
        self.check_range(offset, length)
        return self.parent.map(self.start + offset, length)

    def release(self, offset: int, length: int) -> None:
        end = min(self.size, offset + length)
        start = max(0, offset)
        if end > start:
            self.parent.release(self.start + start, end - start)
