"""A local file, memory-mapped read-only: weights become views of the page cache."""

from __future__ import annotations

import contextlib
import mmap
import os
from pathlib import Path

from pullweights.errors import SourceError
from pullweights.sources.base import ByteSource

__all__ = ["FileSource"]


class FileSource(ByteSource):
    """A local file. Ranges are served from one read-only ``mmap`` of the whole file.

    Pages are file-backed and clean: they count in RSS while touched but never as private
    memory, and the kernel can drop them under pressure.

    Raises:
        SourceError: the file cannot be opened or mapped.
    """

    local = True

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise SourceError(f"{self.path}: cannot open: {exc.strerror}") from exc
        try:
            st = os.fstat(fd)
            self.size = st.st_size
            self.identity = f"file:{self.path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
            self._mmap: mmap.mmap | None = (
                mmap.mmap(fd, 0, access=mmap.ACCESS_READ) if st.st_size else None
            )
        except (OSError, ValueError) as exc:
            raise SourceError(f"{self.path}: cannot map: {exc}") from exc
        finally:
            os.close(fd)
        self._view = memoryview(self._mmap) if self._mmap is not None else memoryview(b"")

    async def read_into(self, offset: int, out: memoryview) -> None:
        self.check_range(offset, len(out))
        out[:] = self._view[offset : offset + len(out)]

    def map(self, offset: int, length: int) -> memoryview | None:
        self.check_range(offset, length)
        if self._mmap is None and length:
            raise SourceError(f"{self.path}: source is closed")
        return self._view[offset : offset + length]

    def advise_willneed(self, offset: int, length: int) -> None:
        """Ask the kernel to read a range ahead (``MADV_WILLNEED``); a hint, never an error."""
        if self._mmap is None or not hasattr(mmap, "MADV_WILLNEED") or length <= 0:
            return
        start = offset - offset % mmap.PAGESIZE
        with contextlib.suppress(OSError, ValueError):
            self._mmap.madvise(mmap.MADV_WILLNEED, start, offset + length - start)

    def release(self, offset: int, length: int) -> None:
        """Drop the range's pages from this process's resident set (``MADV_DONTNEED`` on
        the read-only map: the file's pages stay cached and fault back in if read)."""
        if self._mmap is None or not hasattr(mmap, "MADV_DONTNEED") or length <= 0:
            return
        start = -(-offset // mmap.PAGESIZE) * mmap.PAGESIZE  # whole pages inside the range
        stop = (offset + length) // mmap.PAGESIZE * mmap.PAGESIZE
        if stop > start:
            with contextlib.suppress(OSError, ValueError):
                self._mmap.madvise(mmap.MADV_DONTNEED, start, stop - start)

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """Unmap the file (synchronous form of :meth:`aclose`)."""
        if self._mmap is None:
            return
        self._view.release()
        # Arrays handed to onnxruntime may still view the map; it closes when they go.
        with contextlib.suppress(BufferError):
            self._mmap.close()
        self._mmap = None
        self._view = memoryview(b"")
