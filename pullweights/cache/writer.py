"""Writing one weight entry so that a crash, an error or a cancellation never leaves a bad one.

Steps (one writer, one payload), on top of :class:`~pullweights.cache.staged.StagedWriter`:

1. ``open``: a fresh, locked staging directory; one chunk file per part, preallocated
   with ``posix_fallocate`` so a full disk fails here, with a :class:`CacheError`,
   instead of as ``SIGBUS`` in a later page fault.
2. ``array(part)``: a writable shared ``mmap`` of the chunk file. Producers write the bytes
   straight into place (``source.read_into``, a transform's output); or ``write(part,
   data)`` copies an array in with ``pwrite``.
3. ``commit``: checksum each part, ``fsync`` it, write each array's ``zarr.json``, then the
   record (the entry group's ``zarr.json``, written last), ``fsync`` the directories, and
   ``rename`` the staging directory to ``entries/<kk>/<content key>``. That rename is
   the commit: before it nothing is visible, after it everything is.
4. Any exception or cancellation before the rename: the staging directory goes to the
   trash. A killed process leaves an unlocked staging directory, removed by the next
   writer, ``verify`` or ``prune``.

The entry's key is its content key (:mod:`~pullweights.cache.index`): known when writing
starts if the raw bytes are (a local file, or fetched bytes given to ``get``), else — a
raw payload fetched straight into the entry — computed from the bytes at commit. Two
writers of one key each write their own staging directory; the first rename wins and
the other, finding a whole entry in place, discards its copy.

In a cache that cannot be written (read-only), a writer keeps the parts in memory and
stores nothing: the load goes on without the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import mmap
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np

from pullweights.cache.checksum import RunningChecksum, checksum, remember
from pullweights.cache.confined import area, write_new_file
from pullweights.cache.entry import array_attributes
from pullweights.cache.index import HEAD, RunningDigest, content_key, digest
from pullweights.cache.layout import (
    ZARR_JSON,
    array_metadata,
    check_part_name,
    entry_dir,
    group_metadata,
)
from pullweights.cache.record import Part, Record, StoredFile
from pullweights.cache.sizes import format_size
from pullweights.cache.staged import StagedWriter
from pullweights.dtypes import DataType, to_numpy
from pullweights.errors import CacheError
from pullweights.weights import Payload

__all__ = ["EntryWriter", "READ_ONLY"]

_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
#: errno values that mean "this cache cannot be written at all".
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
#: Bytes per ``pwrite`` call.
_WRITE_BLOCK = 64 << 20


@dataclass
class _PartFile:
    name: str
    dtype: DataType
    shape: tuple[int, ...]
    path: Path | None = None
    fd: int = -1
    mm: mmap.mmap | None = None
    array: np.ndarray | None = None
    #: Checksum of bytes given to ``write`` (None once the part is mapped).
    checksum: str | None = None
    #: SHA-256 of bytes given to ``write``, when the content key is made from them.
    digest: str | None = None
    #: ``write_at``: bytes written so far (in order) and their running checksum.
    streamed: int = 0
    running: RunningChecksum = field(default_factory=RunningChecksum)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * to_numpy(self.dtype).itemsize


#: Called after the commit with the writer, the record and the entry's directory;
#: returns the committed entry's arrays.
OnCommit = Callable[["EntryWriter", Record, Path], dict[str, np.ndarray]]


class EntryWriter(StagedWriter):
    """Writes the parts of one payload into the cache; commit on clean exit, discard otherwise.

    Obtain it from :meth:`WeightCache.writer`; use it as ``async with`` (the commit runs in a
    worker thread) or ``with`` (the commit runs in the calling thread). Example::

        async with cache.writer(payload) as w:
            buf = w.array("data")                      # writable, shape/dtype of the part
            await payload.source.read_into(payload.offset, memoryview(buf).cast("B"))
        arrays = w.result                              # read-only maps of the entry

    Every part must be obtained with :meth:`array` (or given with :meth:`write`) before the
    commit; bytes a producer did not write read back as zeros, so fill what you take.
    Arrays from :meth:`array` must not be written after the block ends.

    Raises:
        CacheError: the disk is full (names the cache and the bytes needed), a part is
            unknown or was never written, or the filesystem fails.
    """

    kind = "weights"

    def __init__(
        self,
        root: Path,
        payload: Payload,
        *,
        durable: bool,
        key: str | None,
        raw_digest: str | None,
        on_commit: OnCommit,
        on_read_only: Callable[[OSError], None] | None = None,
        persist: bool = True,
    ) -> None:
        super().__init__(root, payload.key, durable=durable)
        self.payload = payload
        #: The entry's content key (None: computed from the raw part at commit).
        self.key = key
        #: SHA-256 of the payload's raw bytes, if known.
        self.raw_digest = raw_digest
        #: SHA-256 of the raw bytes given to :meth:`feed_raw` (a transformed payload
        #: whose content key is made at commit), and how many there were.
        self._raw = RunningDigest()
        #: Digest of the first :data:`~pullweights.cache.index.HEAD` raw bytes fed.
        self._head = RunningDigest()
        self._on_commit = on_commit
        self._on_read_only = on_read_only
        #: False: a read-only cache; the parts stay in memory and nothing is stored.
        self.persist = persist
        self._parts: dict[str, _PartFile] = {}
        for name, desc in payload.outputs.items():
            try:
                shape = desc.static_shape
            except ValueError as exc:
                raise CacheError(f"{payload.describe()}: part {name} has {exc}") from exc
            self._parts[check_part_name(name)] = _PartFile(name, desc.dtype, shape)
        self._written: set[str] = set()
        self.result: dict[str, np.ndarray] | None = None
        """Read-only arrays of the committed entry (set by a successful commit)."""

    def describe(self) -> str:
        return f"writer for {self.payload.describe()}"

    # -- context managers -------------------------------------------------------------

    def __enter__(self) -> EntryWriter:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    async def __aenter__(self) -> EntryWriter:
        self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
            return
        future = asyncio.get_running_loop().run_in_executor(None, self.commit)
        cancelled = False
        while not future.done():
            try:
                await asyncio.wait([future])
            except asyncio.CancelledError:
                # The thread cannot be stopped: ask it to abort before publishing, and wait
                # for it so that no staging file outlives this task.
                cancelled = True
                self.cancel()
        if cancelled:
            # Retrieved and dropped: the entry was either published whole or discarded.
            future.exception()
            raise asyncio.CancelledError
        future.result()

    # -- writing ----------------------------------------------------------------------

    def open(self) -> None:
        """Create the staging directory and preallocate every part's chunk file."""
        if not self.persist:
            if self.state != "new":
                raise CacheError(f"{self.describe()} was already opened")
            self.state = "open"
            return
        try:
            self._open_staging()
            self._allocate()
        except BaseException as exc:
            self.abort()
            if isinstance(exc, OSError) and exc.errno in READ_ONLY:
                if self._on_read_only is not None:
                    self._on_read_only(exc)
                self.persist, self.state = False, "open"
                return
            if isinstance(exc, OSError):
                raise self._os_error(exc, "prepare") from exc
            raise

    def _check_open(self) -> None:
        if self.state != "open" or (self.persist and self.staging is None):
            raise CacheError(f"{self.describe()} is {self.state}")

    def array(self, part: str = "data") -> np.ndarray:
        """Writable array of ``part``, mapped onto its chunk file; fill it completely."""
        pf = self._part(part)
        if pf.array is None:
            pf.checksum = pf.digest = None  # the bytes may change through the map
            if pf.path is None:
                pf.array = np.zeros(pf.shape, to_numpy(pf.dtype))
            else:
                pf.mm = mmap.mmap(pf.fd, pf.nbytes)
                pf.array = np.frombuffer(pf.mm, to_numpy(pf.dtype)).reshape(pf.shape)
        self._written.add(part)
        return pf.array

    def write(self, part: str, data: np.ndarray) -> None:
        """Copy ``data`` (same dtype and shape as the part) into ``part``.

        Uses ``pwrite`` (about 2.5x faster here than storing through a fresh map, which
        faults every page in) and checksums ``data`` while it is in memory. It blocks while
        it copies: call it from a worker thread for large arrays.
        """
        pf = self._part(part)
        data = np.asarray(data)
        if data.dtype != to_numpy(pf.dtype) or data.shape != pf.shape:
            raise CacheError(
                f"{self.payload.describe()}: part {part} is {pf.dtype}{list(pf.shape)}, "
                f"got {data.dtype}{list(data.shape)}"
            )
        if not self.persist and pf.array is None:
            pf.array = data  # nothing is stored: the caller's array is the result
            self._written.add(part)
            return
        if pf.path is None or pf.array is not None:
            np.copyto(self.array(part), data)
            return
        flat = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        try:
            done = 0
            while done < flat.size:
                done += os.pwrite(pf.fd, flat[done : done + _WRITE_BLOCK], done)
        except OSError as exc:
            self.abort()
            raise self._os_error(exc, "store") from exc
        pf.checksum = checksum(flat)
        if self.key is None and self.payload.transform is None:
            pf.digest = digest(flat)
        self._written.add(part)

    def write_at(self, part: str, offset: int, data: np.ndarray) -> None:
        """Copy ``data``'s bytes into ``part`` at byte ``offset``: the next bytes in order.

        For producers that make a part piece by piece (a transform working in row
        groups): the pieces must come in order and fill the part exactly; the checksum
        is computed as they pass. Blocking: call it from a worker thread.

        Raises:
            CacheError: a piece out of order or past the end, or the disk fails.
        """
        pf = self._part(part)
        flat = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        if offset != pf.streamed or (self.persist and (pf.array is not None or pf.path is None)):
            raise CacheError(
                f"{self.payload.describe()}: part {part} piece at byte {offset} is out of "
                f"order (expected {pf.streamed})"
            )
        if offset + flat.size > pf.nbytes:
            raise CacheError(
                f"{self.payload.describe()}: part {part} piece ends at byte "
                f"{offset + flat.size}, past its {pf.nbytes} bytes"
            )
        if not self.persist:  # nothing is stored: the part is assembled in memory
            if pf.array is None:
                pf.array = np.empty(pf.shape, to_numpy(pf.dtype))
            pf.array.reshape(-1).view(np.uint8)[offset : offset + flat.size] = flat
        else:
            try:
                done = 0
                while done < flat.size:
                    done += os.pwrite(pf.fd, flat[done : done + _WRITE_BLOCK], offset + done)
            except OSError as exc:
                self.abort()
                raise self._os_error(exc, "store") from exc
            pf.running.update(flat)
        if self.key is None and self.payload.transform is None:
            self.feed_raw(flat)  # a raw payload's part is its raw bytes
        pf.streamed += flat.size
        if pf.streamed == pf.nbytes:
            pf.checksum = pf.running.value
            self._written.add(part)

    def feed_raw(self, data: np.ndarray | memoryview) -> None:
        """Give the payload's raw bytes, in order, as they are read: a transformed payload
        whose content was unknown when writing started gets its content key from them at
        commit. Blocking (hashes): call it from a worker thread."""
        with memoryview(data) as view, view.cast("B") as flat:
            if self._raw.length < HEAD:
                self._head.update(flat[: HEAD - self._raw.length])
            self._raw.update(flat)

    @property
    def head_digest(self) -> str | None:
        """Digest of the payload's first raw bytes, if they were fed (see :meth:`feed_raw`)."""
        whole = min(HEAD, self.payload.length)
        return self._head.value if self._raw.length and self._head.length == whole else None

    def _part(self, part: str) -> _PartFile:
        self._check_open()
        if part not in self._parts:
            raise CacheError(
                f"{self.payload.describe()} has no part {part!r}; parts: {', '.join(self._parts)}"
            )
        return self._parts[part]

    def _allocate(self) -> None:
        assert self.staging is not None
        for pf in self._parts.values():
            rel = Part(pf.name, pf.dtype, pf.shape).chunk
            self._mkdir(self.staging / pf.name)
            if rel is None:
                continue
            pf.path = self.staging / rel
            for parent in reversed(Path(rel).parents[:-2]):
                self._mkdir(self.staging / parent)
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            pf.fd = os.open(pf.path, flags, 0o644)
            try:
                os.posix_fallocate(pf.fd, 0, pf.nbytes)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                os.ftruncate(pf.fd, pf.nbytes)  # no preallocation on this filesystem

    # -- commit / abort ---------------------------------------------------------------

    def commit(self) -> dict[str, np.ndarray]:
        """Publish the entry (or adopt an identical one another writer published first).

        Returns the committed entry's read-only arrays (also kept in :attr:`result`).
        """
        self._check_open()
        missing = [name for name in self._parts if name not in self._written]
        if missing:
            self.abort()
            raise CacheError(
                f"{self.payload.describe()}: parts {', '.join(missing)} were never written; "
                "nothing was stored"
            )
        if not self.persist:
            arrays = {n: pf.array for n, pf in self._parts.items() if pf.array is not None}
            self.state = "committed"
            self.result = arrays
            return arrays
        try:
            final, record = self._commit(self._seal)
        except OSError as exc:
            raise self._os_error(exc, "store") from exc
        self.result = self._on_commit(self, record, final)
        return self.result

    def _seal(self) -> Record:
        """Checksum and flush the parts, write each array's metadata; the record."""
        assert self.staging is not None
        files: dict[str, StoredFile] = {}
        parts: dict[str, Part] = {}
        raw_digest = self.raw_digest
        # A raw payload whose key is made at commit: its one part is the raw bytes.
        compute = self.key is None and self.payload.transform is None
        for pf in self._parts.values():
            part = Part(pf.name, pf.dtype, pf.shape)
            parts[pf.name] = part
            if part.chunk is not None:
                if pf.mm is not None:
                    pf.checksum = checksum(pf.mm)
                    if compute:
                        pf.digest = digest(pf.mm)
                assert pf.checksum is not None
                if self.durable and pf.fd >= 0:
                    os.fsync(pf.fd)
                if pf.fd >= 0:
                    remember(pf.fd, pf.checksum)  # opening it right after reads nothing
                files[part.chunk] = StoredFile(part.chunk, pf.nbytes, pf.checksum)
            attrs = array_attributes(files.get(part.chunk) if part.chunk else None)
            if compute:
                raw_digest = pf.digest
                if raw_digest is None and self._raw.length == part.nbytes:
                    raw_digest = self._raw.value
                if raw_digest is None:
                    raw_digest = digest(b"")  # an array with no elements
            write_new_file(
                self.staging / pf.name / ZARR_JSON,
                array_metadata(pf.dtype, pf.shape, attrs),
                durable=self.durable,
            )
        p = self.payload
        t = p.transform
        if self.key is None and t is not None:
            if self._raw.length != p.length:
                raise CacheError(
                    f"{p.describe()}: the content of a transformed payload read from "
                    f"{p.source.name} is unknown ({self._raw.length} of {p.length} raw bytes "
                    "were given to feed_raw); nothing was stored"
                )
            raw_digest = self._raw.value
        if self.key is None:
            assert raw_digest is not None
            self.raw_digest, self.key = raw_digest, content_key(p, raw_digest)
        return Record(
            kind="weights",
            key=self.key,
            label=p.label,
            created=time.time(),
            files=files,
            made_by=f"{t.name} v{t.version}" if t is not None else "raw",
            parts=parts,
            params=t.params if t is not None else repr(p.raw_descriptor),
            source=p.source.identity,
            source_name=p.source.name,
            offset=p.offset,
            length=p.length,
            content=raw_digest or "",
        )

    def _final(self, key: str) -> Path:
        final = entry_dir(self.root, key)
        top = area(self.root, "entries")
        self._ensure_group(top)
        self._ensure_group(area(top, final.parent.name))
        return final

    def _ensure_group(self, directory: Path) -> None:
        """Make ``directory`` a zarr group (idempotent, atomic)."""
        if (directory / ZARR_JSON).exists():
            return
        tmp = directory / f".{ZARR_JSON}.{secrets.token_hex(4)}"
        write_new_file(tmp, group_metadata(), durable=self.durable)
        os.rename(tmp, directory / ZARR_JSON)

    def _close(self) -> None:
        for pf in self._parts.values():
            if pf.fd >= 0:
                os.close(pf.fd)
                pf.fd = -1
            if self.persist:
                pf.array = None
            if pf.mm is not None:
                # A producer may still hold a view; the map then closes when it lets go.
                with contextlib.suppress(BufferError):
                    pf.mm.close()
                pf.mm = None

    def _os_error(self, exc: OSError, doing: str) -> CacheError:
        need = sum(pf.nbytes for pf in self._parts.values())
        what = self.payload.describe()
        if exc.errno in _FULL:
            free = ""
            with contextlib.suppress(OSError):
                st = os.statvfs(self.root)
                free = f", {format_size(st.f_bavail * st.f_frsize)} free"
            return CacheError(
                f"cache at {self.root} is full: storing {what} needs {format_size(need)} "
                f"({need} bytes){free}: {exc.strerror}"
            )
        return CacheError(f"cache at {self.root}: cannot {doing} {what}: {exc}")
