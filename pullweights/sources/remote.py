"""A remote object that remembers its identity and header on disk, revalidated cheaply.

The first open makes an :class:`~pullweights.sources.http.HttpSource` (one small request)
and records the bytes the header parser reads; :meth:`RemoteSource.remember_header` then
writes them with the identity into the record store (:mod:`.remote_record`). A server
without range support gets one streaming GET of the whole object into a local copy
beside the record (:mod:`.remote_download`), read from there.

A later open of the same URL finds the record and *revalidates* it: one ``GET
Range: bytes=0-0`` whose size and ETag / Last-Modified must match the record's (for an
object with neither, the header range is read again and its SHA-256 compared). Unchanged:
header reads come from the record, weights from the weight cache (keyed by the recorded
identity), and the network only for bytes outside both. Changed: the record is dropped
and the new version fetched, under a new identity, so cached weights of the old version
are never mixed with the new header. ``offline=True`` skips the check and never touches
the network; ``refresh=True`` ignores the record and fetches the header again. A server
that cannot be reached for the check is reported and the remembered version used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import os
from pathlib import Path

from pullweights.errors import FetchError, RemoteChangedError, SourceError, UnsupportedError
from pullweights.sources.base import ByteSource
from pullweights.sources.file import FileSource
from pullweights.sources.http import HttpSource
from pullweights.sources.http_settings import HttpSettings
from pullweights.sources.progress import ProgressCallback
from pullweights.sources.remote_download import checksum_file, download_whole
from pullweights.sources.remote_record import RecordStore, RemoteRecord, head_digest

__all__ = ["RemoteSource"]

logger = logging.getLogger("pullweights.sources.remote")

Remembered = tuple[RemoteRecord, mmap.mmap | bytes]


async def _changed(http: HttpSource, record: RemoteRecord) -> str | None:
    """Why the object ``http`` opened is not the one ``record`` remembers, or ``None``."""
    if http.size != record.size:
        return f"its size is {http.size} bytes, was {record.size}"
    old, new = record.validator, http.validator
    if old.token != new.token:
        return f"its validator is {new.token!r}, was {old.token!r}"
    if old.etag is None and old.last_modified is None:
        head = await http.read_head(record.head_length)
        if head_digest(head) != record.head_sha256:
            return (
                f"its first {record.head_length} bytes differ from those pulled (the server "
                "sends no ETag or Last-Modified)"
            )
    return None


class RemoteSource(ByteSource):
    """An ``http(s)://`` object read through :class:`HttpSource`, remembered in
    ``record_dir`` (see the module docs). Create with :meth:`open`.

    ``identity`` is the HTTP identity (URL, validator, size); for an object without a
    validator the SHA-256 of its header is added once :meth:`remember_header` has run.
    """

    url: str
    #: How the open went: ``"fetched"`` (not remembered), ``"refreshed"``, ``"changed"``
    #: (remembered, changed on the server, fetched again), ``"unchanged"`` (revalidated),
    #: ``"offline"``, or ``"unverified"`` (the server could not be asked).
    origin: str

    def __init__(
        self,
        url: str,
        store: RecordStore | None,
        settings: HttpSettings,
        progress: ProgressCallback | None,
        *,
        origin: str,
        offline: bool = False,
        http: HttpSource | None = None,
        remembered: Remembered | None = None,
        local: FileSource | None = None,
        download_crc32: str | None = None,
    ) -> None:
        """Use :meth:`open`."""
        self.url = self.name = url
        self.record_dir = None if store is None else store.directory
        self.origin = origin
        self._store = store
        self._settings = settings
        self._progress = progress
        self._offline = offline
        self._http = http
        self._local = local
        self._download_crc32 = download_crc32
        self._lock = asyncio.Lock()
        self._fetched = 0
        self._record: RemoteRecord | None = None
        self._head: mmap.mmap | bytes | None = None
        self._prefix = bytearray()  # contiguous bytes from offset 0 read over the network
        if remembered is not None:
            self._record, self._head = remembered
            self.size, self.identity = self._record.size, self._record.identity
            self._validator = self._record.validator
            self._accepts_ranges = self._record.accepts_ranges
        else:
            assert http is not None
            self.size, self.identity = http.size, http.identity
            self._validator = http.validator
            self._accepts_ranges = http.accepts_ranges
        self._recording = remembered is None and local is None

    @property
    def from_record(self) -> bool:
        """True when the header comes from the record (no header bytes fetched)."""
        return self._head is not None

    @property
    def bytes_fetched(self) -> int:
        """Body bytes received over HTTP by this source so far (downloads included)."""
        return self._fetched + (self._http.bytes_received if self._http is not None else 0)

    @property
    def local_copy(self) -> Path | None:
        """The complete local copy read instead of the server (no range support), if any."""
        return None if self._local is None else self._local.path

    @classmethod
    async def open(
        cls,
        url: str,
        record_dir: str | os.PathLike[str] | None = None,
        *,
        settings: HttpSettings | None = None,
        offline: bool = False,
        refresh: bool = False,
        progress: ProgressCallback | None = None,
    ) -> RemoteSource:
        """Open ``url``: from its record in ``record_dir`` (revalidated), else over HTTP.

        Args:
            url: ``http://`` or ``https://`` URL.
            record_dir: where headers are remembered (``<cache>/remote``); ``None``
                remembers nothing, and a server without range support is an error.
            settings: HTTP timeouts, retries, headers, TLS (default ``HttpSettings()``).
            offline: use the record only, with no network request at all.
            refresh: ignore the record; fetch the header (or the whole object, from a
                server without range support) again.
            progress: byte progress of the transfers (header, download, weights).

        Raises:
            SourceError: offline and not remembered; the record directory is unusable.
            FetchError: the server fails, or has no range support and there is no
                ``record_dir``.
            UnsupportedError: both ``offline`` and ``refresh``.
        """
        settings = settings or HttpSettings()
        if offline and refresh:
            raise UnsupportedError(f"{url}: offline and refresh exclude each other")
        store = None if record_dir is None else RecordStore(record_dir)
        remembered = None
        if store is not None and not refresh:
            remembered = await _load_checked(store, url)
        if offline:
            if remembered is None:
                where = "no cache directory" if store is None else f"nothing in {store.directory}"
                raise SourceError(
                    f"{url}: not available offline ({where}): pull it once without "
                    f"--offline (`pullweights pull {url}`)"
                )
            return cls._from_record(url, store, settings, progress, remembered, None, "offline")
        if remembered is not None:
            assert store is not None
            opened = await cls._revalidate(url, store, settings, progress, remembered)
            if opened is not None:
                return opened
        http = await HttpSource.open(url, settings=settings, progress=progress)
        return await cls._fetch(
            url, store, settings, progress, http, "refreshed" if refresh else "fetched"
        )

    @classmethod
    def _from_record(
        cls,
        url: str,
        store: RecordStore | None,
        settings: HttpSettings,
        progress: ProgressCallback | None,
        remembered: Remembered,
        http: HttpSource | None,
        origin: str,
    ) -> RemoteSource:
        record = remembered[0]
        local = None
        if record.download is not None:
            assert store is not None
            try:
                local = FileSource(store.directory / record.download)
            except BaseException:
                _close_head(remembered[1])
                raise
        return cls(
            url,
            store,
            settings,
            progress,
            origin=origin,
            offline=origin == "offline",
            http=http,
            remembered=remembered,
            local=local,
        )

    @classmethod
    async def _revalidate(
        cls,
        url: str,
        store: RecordStore,
        settings: HttpSettings,
        progress: ProgressCallback | None,
        remembered: Remembered,
    ) -> RemoteSource | None:
        """The remembered source if the server still has that object, else ``None``
        (the record dropped) after opening the new one."""
        record = remembered[0]
        try:
            http = await HttpSource.open(
                url, settings=settings, progress=progress, open_retries=min(settings.retries, 1)
            )
        except FetchError as exc:
            logger.warning(
                "%s: cannot check whether it changed (%s); using the version pulled before",
                url,
                exc,
            )
            return cls._from_record(url, store, settings, progress, remembered, None, "unverified")
        try:
            reason = await _changed(http, record)
            if reason is None:
                if record.download is not None:  # every byte is local: no connection
                    fetched = http.bytes_received
                    await http.aclose()
                    source = cls._from_record(
                        url, store, settings, progress, remembered, None, "unchanged"
                    )
                    source._fetched = fetched
                    return source
                return cls._from_record(
                    url, store, settings, progress, remembered, http, "unchanged"
                )
            logger.warning(
                "%s changed on the server since it was pulled (%s): its remembered header is "
                "dropped and the new version fetched",
                url,
                reason,
            )
            _close_head(remembered[1])
            store.drop(url)
        except BaseException:
            await http.aclose()
            raise
        return await cls._fetch(url, store, settings, progress, http, "changed")

    @classmethod
    async def _fetch(
        cls,
        url: str,
        store: RecordStore | None,
        settings: HttpSettings,
        progress: ProgressCallback | None,
        http: HttpSource,
        origin: str,
    ) -> RemoteSource:
        """A source over a freshly opened ``http`` (downloaded whole if it has no ranges)."""
        try:
            if http.accepts_ranges:
                return cls(url, store, settings, progress, origin=origin, http=http)
            if store is None:
                raise FetchError(
                    f"{url}: the server does not support HTTP range requests (it answered one "
                    "with the whole object), and there is no cache directory to download it "
                    "into. Use a cache (pullweights.create_context(cache_dir=...), or run "
                    "without --no-cache), or download the file and open its local path, or "
                    "serve it with a server that supports Range (nginx, aiohttp, ...)"
                )
            path = store.data_path(url)
            crc = await download_whole(http, path)
            local = FileSource(path)
            source = cls(
                url,
                store,
                settings,
                progress,
                origin=origin,
                http=http,
                local=local,
                download_crc32=crc,
            )
            source._fetched = http.bytes_received
            source._http = None
        except BaseException:
            await http.aclose()
            raise
        await http.aclose()
        return source

    async def remember_header(self, length: int) -> None:
        """The header parsed: fix the identity and record it with the first ``length``
        bytes (every byte the parser read, if more) in the record directory."""
        if self._record is not None:
            return
        # Keep every byte the parser read (its last window may pass the header), so a
        # parse from the record repeats the same reads without the network.
        length = min(max(length, len(self._prefix)), self.size)
        if self._local is not None:
            head = bytes(self._local.map(0, length) or b"")
        else:
            if len(self._prefix) < length:
                missing = bytearray(length - len(self._prefix))
                await self.read_into(len(self._prefix), memoryview(missing))
            head = bytes(self._prefix[:length])
        digest = head_digest(head)
        validator = self._validator
        if validator.etag is None and validator.last_modified is None:
            # Nothing else tells versions apart: the header's digest joins the identity,
            # so weights cached for another header never match.
            self.identity = f"{self.identity}|head-{digest}"
        download = None if self._local is None else self._local.path.name
        self._record = RemoteRecord(
            url=self.url,
            size=self.size,
            identity=self.identity,
            etag=validator.etag,
            last_modified=validator.last_modified,
            accepts_ranges=self._accepts_ranges,
            head_length=length,
            head_sha256=digest,
            download=download,
            download_crc32=self._download_crc32,
        )
        self._recording = False
        self._prefix = bytearray()
        if self._store is not None:
            try:
                self._store.save(self._record, head)
            except SourceError as exc:  # an unusable cache: run without remembering
                logger.warning("%s; it is not remembered, and will be fetched again", exc)

    def map(self, offset: int, length: int) -> memoryview | None:
        self.check_range(offset, length)
        if self._head is not None and offset + length <= len(self._head):
            return memoryview(self._head)[offset : offset + length]
        if self._local is not None:
            return self._local.map(offset, length)
        return None

    async def read_into(self, offset: int, out: memoryview) -> None:
        self.check_range(offset, len(out))
        mapped = self.map(offset, len(out))
        if mapped is not None:
            out[:] = mapped
            return
        http = await self._connection(offset, len(out))
        await http.read_into(offset, out)
        if self._recording and offset <= len(self._prefix) < offset + len(out):
            self._prefix += out[len(self._prefix) - offset :]

    async def _connection(self, offset: int, length: int) -> HttpSource:
        async with self._lock:
            if self._http is None:
                if self._offline:
                    raise SourceError(
                        f"{self.url}: bytes {offset}-{offset + length - 1} are not in the cache "
                        "and the load is offline; pull the model without --offline"
                    )
                assert self._record is not None
                http = await HttpSource.open(
                    self.url, settings=self._settings, progress=self._progress
                )
                try:
                    reason = await _changed(http, self._record)
                except BaseException:
                    await http.aclose()
                    raise
                if reason is not None:
                    self._fetched += http.bytes_received
                    await http.aclose()
                    raise RemoteChangedError(
                        f"{self.url} changed since it was cached ({reason}); pull it again "
                        f"(`pullweights pull {self.url}`) to fetch the new version"
                    )
                self._http = http
            return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            self._fetched += self._http.bytes_received
            await self._http.aclose()
            self._http = None
        if self._local is not None:
            self._local.close()
        if self._head is not None:
            _close_head(self._head)
        self._head = None


def _close_head(head: mmap.mmap | bytes) -> None:
    if isinstance(head, mmap.mmap):
        with contextlib.suppress(BufferError):  # arrays still view it
            head.close()


async def _load_checked(store: RecordStore, url: str) -> Remembered | None:
    """``store.load(url)``, with a remembered local copy checked against its CRC-32."""
    remembered = store.load(url)
    if remembered is None or remembered[0].download is None:
        return remembered
    record, head = remembered
    assert record.download is not None
    copy = store.directory / record.download
    try:
        crc = await checksum_file(copy)
    except OSError as exc:
        crc = f"unreadable ({exc.strerror})"
    if crc == record.download_crc32:
        return remembered
    logger.warning(
        "%s: the local copy %s is damaged (checksum %s, recorded %s); it is removed and "
        "fetched again",
        url,
        copy,
        crc,
        record.download_crc32,
    )
    _close_head(head)
    store.drop(url)
    return None
