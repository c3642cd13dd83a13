"""A local file, memory-mapped read-only: weights become views of the page cache.

A mapped file that shrinks under us would kill the process with ``SIGBUS`` the next time
a weight past the new end is read, and one rewritten in place would silently change the
weights. :meth:`FileSource.check_unchanged` looks (one ``fstat`` of the mapped file) for
either before a compute touches the map; :func:`mapped_file_checks` collects those checks
from the sources of a graph's weights. A file *replaced* by a rename is not an error: the
map still holds the old file's bytes, which are the ones loaded.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from pullweights.errors import SourceError
from pullweights.sources.base import ByteSource

__all__ = ["FileSource", "mapped_file_checks"]


class FileSource(ByteSource):
    """A local file. Ranges are served from one read-only ``mmap`` of the whole file.

    Pages are file-backed and clean: they count in RSS while touched but never as private
    memory, and the kernel can drop them under pressure.

    Raises:
        SourceError: the path is not a path, or the file cannot be opened or mapped.
    """

    local = True

    def __init__(self, path: str | os.PathLike[str]) -> None:
        try:
            self.path = Path(path)
        except TypeError as exc:
            raise SourceError(f"FileSource: {path!r} is not a path") from exc
        self.name = str(self.path)
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise SourceError(f"{self.path}: cannot open: {exc.strerror}") from exc
        self._fd: int | None = fd
        try:
            st = os.fstat(fd)
            self.size = st.st_size
            self.identity = f"file:{self.path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
            self._stat = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            self._mmap: mmap.mmap | None = (
                mmap.mmap(fd, 0, access=mmap.ACCESS_READ) if st.st_size else None
            )
        except (OSError, ValueError, OverflowError) as exc:
            self._fd = None
            os.close(fd)
            raise SourceError(f"{self.path}: cannot map: {exc}") from exc
        self._view = memoryview(self._mmap) if self._mmap is not None else memoryview(b"")
        self._closed = False

    async def read_into(self, offset: int, out: memoryview) -> None:
        self.check_range(offset, len(out))
        if self._closed and len(out):
            raise SourceError(f"{self.path}: source is closed")
        self.check_unchanged()
        out[:] = self._view[offset : offset + len(out)]

    def map(self, offset: int, length: int) -> memoryview | None:
        self.check_range(offset, length)
        if self._closed and length:
            raise SourceError(f"{self.path}: source is closed")
        self.check_unchanged()
        return self._view[offset : offset + length]

    def check_unchanged(self) -> None:
        """Raise :class:`SourceError` if the mapped file was truncated or written since it
        was opened (its size, modification or change time differ): reading the map could
        then crash the process (``SIGBUS``) or give other bytes. One ``fstat``."""
        if self._fd is None:
            return
        try:
            st = os.fstat(self._fd)
        except OSError as exc:
            raise SourceError(f"{self.path}: cannot check the mapped file: {exc}") from exc
        size, mtime, ctime = self._stat
        if (
            st.st_size == size
            and st.st_mtime_ns == mtime
            and (st.st_ctime_ns == ctime or st.st_nlink == 0)
        ):
            return  # unchanged, or unlinked (replaced by a rename): the map is intact
        if st.st_size < self.size:
            what = f"was truncated from {self.size} to {st.st_size} bytes"
        elif st.st_size != self.size:
            what = f"grew from {self.size} to {st.st_size} bytes"
        else:
            what = "was modified"
        raise SourceError(
            f"{self.path}: the file {what} after it was mapped; its weights can no longer "
            "be read safely (load it again)"
        )

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
        """Unmap the file (synchronous form of :meth:`aclose`).

        Arrays handed to onnxruntime may still view the map: it then stays until they go,
        and so does the file descriptor :meth:`check_unchanged` looks at (closed when this
        source is garbage-collected).
        """
        self._closed = True
        if self._mmap is None:
            self._close_fd()
            return
        self._view.release()
        try:
            self._mmap.close()
        except BufferError:
            return  # still viewed: keep it (and the descriptor) until the views go
        self._mmap = None
        self._view = memoryview(b"")
        self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def mapped_file_checks(sources: Iterable[ByteSource]) -> list[Callable[[], None]]:
    """:meth:`FileSource.check_unchanged` of every file behind ``sources`` (a
    :class:`FileSource`, or a source made of parts such as a ``ConcatSource``), once each."""
    checks: dict[int, Callable[[], None]] = {}
    stack = list(sources)
    while stack:
        source = stack.pop()
        if isinstance(source, FileSource):
            checks.setdefault(id(source), source.check_unchanged)
        else:
            stack.extend(getattr(source, "parts", ()))
    return list(checks.values())
