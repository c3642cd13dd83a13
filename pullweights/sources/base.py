"""The one protocol every byte source implements: read a byte range, map it, close."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self

from pullweights.errors import SourceError

__all__ = ["ByteSource"]


class ByteSource(abc.ABC):
    """A read-only run of bytes that weights are pulled from (a file, parts, a URL, memory).

    Subclasses implement :meth:`read_into`; local sources also implement :meth:`map` so a
    weight can reach onnxruntime without a copy. ``identity`` is a stable key for the
    on-disk cache: it changes whenever the bytes may have changed.
    """

    #: Total length in bytes.
    size: int
    #: Stable identity of the bytes (path + size + mtime, URL + validator, ...).
    identity: str
    #: Human-readable name used in error messages.
    name: str
    #: True when reading the bytes again is cheap (a local file or memory, not a
    #: download): a loader may keep less of what it made from them and redo it later.
    local: bool = False

    @property
    def model_source(self) -> ByteSource:
        """The source of the whole model these bytes belong to: itself, unless it is carved
        out of another (:class:`~pullweights.sources.slice.SliceSource`); the cache
        records a model's entries under it."""
        return self

    @abc.abstractmethod
    async def read_into(self, offset: int, out: memoryview) -> None:
        """Fill ``out`` with the bytes at ``offset``; raise :class:`SourceError` if short."""

    async def read(self, offset: int, length: int) -> bytes:
        """Return ``length`` bytes at ``offset`` as a new ``bytes`` object."""
        self.check_range(offset, length)
        mapped = self.map(offset, length)
        if mapped is not None:
            return bytes(mapped)
        buf = bytearray(length)
        await self.read_into(offset, memoryview(buf))
        return bytes(buf)

    def map(self, offset: int, length: int) -> memoryview | None:
        """A zero-copy read-only view of the range, or ``None`` if the source cannot map it."""
        return None

    def release(self, offset: int, length: int) -> None:  # noqa: B027 - optional hint
        """A hint that the range will not be read again soon: a mapped source drops its
        pages from this process's memory (they stay in the page cache). Never an error."""

    def check_range(self, offset: int, length: int) -> None:
        """Raise :class:`SourceError` unless ``[offset, offset + length)`` lies inside."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise SourceError(
                f"{self.name}: byte range [{offset}, {offset + length}) is outside the "
                f"source of {self.size} bytes"
            )

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to release here
        """Release file handles, maps and connections. Safe to call twice."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, size={self.size})"
