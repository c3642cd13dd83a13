"""One streaming GET of a whole object into a local file, for servers without ``Range``.

``python -m http.server`` and many simple servers answer a range request with the whole
object (200). Such an object cannot be read by ranges, so it is downloaded once, as it
streams, into a complete local copy next to the remembered header, and read from there.

The copy is written crash-safely: space is allocated first (``posix_fallocate``: a full
disk is an error now, not a ``SIGBUS`` later), the body is received straight into a shared
map of a temporary file (the one-copy receive path: socket to page cache), then flushed,
fsynced, checksummed and renamed into place. A kill at any moment leaves no file under the
final name; a later download removes the temporary files it left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import os
import tempfile
import time
import zlib
from pathlib import Path

from pullweights import events
from pullweights.errors import SourceError
from pullweights.events import Phase
from pullweights.sources.http import HttpSource
from pullweights.sources.remote_record import fsync_directory

__all__ = ["checksum_file", "download_whole"]

logger = logging.getLogger("pullweights.sources.remote")

MiB = 1 << 20
#: Seconds between progress lines in the log while a download runs.
LOG_INTERVAL = 5.0
_HASH_BLOCK = 8 * MiB


def _crc32(view: memoryview | mmap.mmap) -> str:
    crc = 0
    with memoryview(view) as flat:
        for start in range(0, len(flat), _HASH_BLOCK):
            crc = zlib.crc32(flat[start : start + _HASH_BLOCK], crc)
    return f"crc32:{crc:08x}"


async def checksum_file(path: Path) -> str:
    """``crc32:<hex>`` of a file's bytes, computed in a worker thread (zlib frees the GIL).

    Raises:
        OSError: the file cannot be read.
    """

    def run() -> str:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return _crc32(memoryview(b""))
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return _crc32(mm)

    return await asyncio.to_thread(run)


async def _log_progress(http: HttpSource, start: int, total: int, began: float) -> None:
    while True:
        await asyncio.sleep(LOG_INTERVAL)
        done = http.bytes_received - start
        rate = done / max(time.monotonic() - began, 1e-9)
        logger.info(
            "%s: downloading, %d%% (%.1f of %.1f MiB, %.1f MiB/s)",
            http.url,
            100 * done // max(total, 1),
            done / MiB,
            total / MiB,
            rate / MiB,
        )


async def download_whole(http: HttpSource, path: Path) -> str:
    """Stream every byte of ``http``'s object into ``path``; return the copy's CRC-32.

    Progress goes to ``http``'s progress callback, to a ``fetch`` event span (``name``:
    the URL) and, every few seconds, to an INFO line on the
    ``pullweights.sources.remote`` logger.

    Raises:
        SourceError: the directory cannot be written (disk full, permissions).
        FetchError, IntegrityError, RemoteChangedError: from the transfer.
    """
    size = http.size
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob(f".{path.name}.*.partial"):
            stale.unlink(missing_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".partial")
    except OSError as exc:
        raise SourceError(f"{http.url}: cannot download into {directory}: {exc}") from exc
    tmp = Path(tmp_name)
    mm: mmap.mmap | None = None
    try:
        try:
            if size:
                os.posix_fallocate(fd, 0, size)
                mm = mmap.mmap(fd, size, access=mmap.ACCESS_WRITE)
        except OSError as exc:
            raise SourceError(
                f"{http.url}: cannot make room for {size} bytes in {directory}: {exc.strerror}"
            ) from exc
        logger.info("%s: the server does not support Range; downloading %d bytes", http.url, size)
        began, start = time.monotonic(), http.bytes_received
        reporter = asyncio.create_task(_log_progress(http, start, size, began))
        try:
            with events.span(Phase.FETCH, http.url, size):
                if mm is not None:
                    with memoryview(mm) as view:
                        await http.read_into(0, view)
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        try:
            crc = await asyncio.to_thread(_crc32, mm if mm is not None else memoryview(b""))
            if mm is not None:
                mm.flush()
            os.fsync(fd)
        except OSError as exc:
            raise SourceError(f"{http.url}: cannot write {tmp}: {exc.strerror}") from exc
        if mm is not None:
            with contextlib.suppress(BufferError):  # a view still held elsewhere: GC closes it
                mm.close()
            mm = None
        os.close(fd)
        fd = -1
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise SourceError(f"{http.url}: cannot move the download to {path}: {exc}") from exc
        fsync_directory(directory)
        logger.info(
            "%s: downloaded %.1f MiB in %.1f s into %s",
            http.url,
            size / MiB,
            time.monotonic() - began,
            path,
        )
        return crc
    except BaseException:
        if mm is not None:
            with contextlib.suppress(BufferError):
                mm.close()
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
