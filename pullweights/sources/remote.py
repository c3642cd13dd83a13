"""A remote object that remembers its identity and header on disk, so a model pulled once
opens again with no network request at all.

The first open makes an :class:`~pullweights.sources.http.HttpSource` (one small request)
and records the bytes the header parser reads. :meth:`RemoteSource.remember_header` then
writes a record — URL, size, identity (URL + validator + size) and the header bytes — with
an atomic rename. Later opens of the same URL build the source from the record: header
reads are served from the record's file, weights come from the weight cache (keyed by the
recorded identity), and an HTTP connection is only made if a byte outside both is needed.
That connection must report the recorded identity, else
:class:`~pullweights.errors.RemoteChangedError`: cached weights and new bytes never mix.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import mmap
import os
import tempfile
from pathlib import Path
from typing import Any

from pullweights.errors import RemoteChangedError, SourceError
from pullweights.sources.base import ByteSource
from pullweights.sources.http import HttpSource

__all__ = ["RemoteSource"]

_RECORD_VERSION = 1


def _record_paths(directory: Path, url: str) -> tuple[Path, Path]:
    stem = hashlib.sha256(url.encode()).hexdigest()[:32]
    return directory / f"{stem}.json", directory / f"{stem}.head"


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RemoteSource(ByteSource):
    """An ``http(s)://`` object read through :class:`HttpSource`, with its header and
    identity remembered under ``record_dir`` (see the module docs). Create with
    :meth:`open`."""

    def __init__(
        self,
        url: str,
        record_dir: Path | None,
        http_options: dict[str, Any],
        *,
        size: int,
        identity: str,
        head: bytes | mmap.mmap | None = None,
        http: HttpSource | None = None,
    ) -> None:
        self.url = self.name = url
        self.size = size
        self.identity = identity
        self.record_dir = record_dir
        self._options = http_options
        self._head: bytes | mmap.mmap | None = head
        self._http = http
        self._lock = asyncio.Lock()
        self._prefix = bytearray()  # contiguous bytes from offset 0 read over the network
        self._recording = http is not None and record_dir is not None

    @property
    def from_record(self) -> bool:
        """True when opened from the on-disk record (no network used so far)."""
        return self._head is not None

    @classmethod
    async def open(
        cls, url: str, record_dir: str | os.PathLike[str] | None = None, **http_options: Any
    ) -> RemoteSource:
        """Open ``url`` from its record in ``record_dir`` if there is one, else over HTTP.

        ``http_options`` are passed to :meth:`HttpSource.open`.
        """
        directory = None if record_dir is None else Path(record_dir)
        if directory is not None:
            source = cls._from_record(url, directory, http_options)
            if source is not None:
                return source
        http = await HttpSource.open(url, **http_options)
        return cls(url, directory, http_options, size=http.size, identity=http.identity, http=http)

    @classmethod
    def _from_record(
        cls, url: str, directory: Path, options: dict[str, Any]
    ) -> RemoteSource | None:
        record_path, head_path = _record_paths(directory, url)
        try:
            record = json.loads(record_path.read_text())
            with open(head_path, "rb") as f:
                head_size = os.fstat(f.fileno()).st_size
                head = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if head_size else b""
        except (OSError, ValueError):
            return None
        if (
            record.get("version") != _RECORD_VERSION
            or record.get("url") != url
            or record.get("head_length") != len(head)
        ):
            return None
        return cls(
            url,
            directory,
            options,
            size=int(record["size"]),
            identity=str(record["identity"]),
            head=head,
        )

    async def remember_header(self, length: int) -> None:
        """Record identity and the first ``length`` bytes (the parsed header) on disk."""
        if self.record_dir is None or self._head is not None:
            return
        # Keep every byte the parser read (its last window may pass the header), so a
        # parse from the record repeats the same reads without the network.
        length = min(max(length, len(self._prefix)), self.size)
        if len(self._prefix) < length:
            missing = bytearray(length - len(self._prefix))
            await self.read_into(len(self._prefix), memoryview(missing))
        record_path, head_path = _record_paths(self.record_dir, self.url)
        record = {
            "version": _RECORD_VERSION,
            "url": self.url,
            "size": self.size,
            "identity": self.identity,
            "head_length": length,
        }
        try:
            _atomic_write(head_path, bytes(self._prefix[:length]))
            _atomic_write(record_path, json.dumps(record).encode())
        except OSError as exc:
            raise SourceError(
                f"{self.url}: cannot record the header in {self.record_dir}: {exc}"
            ) from exc
        self._recording = False
        self._prefix = bytearray()

    def map(self, offset: int, length: int) -> memoryview | None:
        self.check_range(offset, length)
        if self._head is not None and offset + length <= len(self._head):
            return memoryview(self._head)[offset : offset + length]
        return None

    async def read_into(self, offset: int, out: memoryview) -> None:
        self.check_range(offset, len(out))
        mapped = self.map(offset, len(out))
        if mapped is not None:
            out[:] = mapped
            return
        http = await self._connection()
        await http.read_into(offset, out)
        if self._recording and offset <= len(self._prefix) < offset + len(out):
            self._prefix += out[len(self._prefix) - offset :]

    async def _connection(self) -> HttpSource:
        async with self._lock:
            if self._http is None:
                http = await HttpSource.open(self.url, **self._options)
                if http.identity != self.identity:
                    await http.aclose()
                    raise RemoteChangedError(
                        f"{self.url} changed since it was cached (was {self.identity}, now "
                        f"{http.identity}); prune the cache entry and pull it again"
                    )
                self._http = http
            return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if isinstance(self._head, mmap.mmap):
            with contextlib.suppress(BufferError):  # arrays still view it
                self._head.close()
        self._head = None
