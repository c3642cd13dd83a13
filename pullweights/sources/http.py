"""A remote object read by HTTP range requests, checked byte for byte.

:class:`HttpSource` splits each read into ranges of ``chunk_size`` bytes, fetches up to
``concurrency`` of them at once over reused connections (and never more than
``max_inflight_bytes`` requested but not yet received), writes every body straight into
its slice of the caller's buffer and checks every response itself (see
:mod:`pullweights.sources.http_validate`): aiohttp raises nothing for a server that ignores
``Range``, sends the wrong range, a short or gzip body, or a changed object.

Failures that a later attempt may fix (5xx, 408, 429, a refused or dropped connection, a
stall longer than ``read_timeout``) are retried with exponential backoff and jitter,
honouring ``Retry-After``; a range that was partly received resumes after its last good
byte. Everything else, and a range still failing after ``retries`` retries or
``retry_deadline`` seconds, raises one typed :mod:`pullweights.errors` error. aiohttp and
asyncio exceptions are translated in :meth:`HttpSource._retrying`, the only place that
awaits aiohttp, and chained as ``__cause__``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Self

import aiohttp
import yarl

from pullweights.errors import FetchError, PullWeightsError, SourceError
from pullweights.sources.base import ByteSource
from pullweights.sources.budget import ByteBudget
from pullweights.sources.http_receive import receive_body
from pullweights.sources.http_validate import (
    Transient,
    Validator,
    check_probe_response,
    check_range_response,
)
from pullweights.sources.progress import ProgressCallback, ProgressMeter

__all__ = ["HttpSource"]

MiB = 1 << 20

# Failures no retry can fix: a bad URL, redirect loops, TLS and certificate problems.
_FATAL_CLIENT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.InvalidURL,
    aiohttp.TooManyRedirects,
    aiohttp.RedirectClientError,
    aiohttp.NonHttpUrlClientError,
    aiohttp.ClientSSLError,
    aiohttp.ServerFingerprintMismatch,
)
_FOREIGN_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class _Settings:
    """The tuning of one source (see :meth:`HttpSource.open` for each)."""

    concurrency: int
    chunk_size: int
    max_inflight_bytes: int
    connect_timeout: float | None
    read_timeout: float | None
    retries: int
    backoff_base: float
    backoff_max: float
    retry_deadline: float
    direct_receive: bool


class HttpSource(ByteSource):
    """Bytes of one ``http://`` or ``https://`` URL; create with :meth:`open`.

    ``identity`` is ``"http:" + url + "|" + validator + "|" + size`` where the validator is
    the ETag, else the Last-Modified date, seen at open; every later response must carry
    the same one (:class:`~pullweights.errors.RemoteChangedError` otherwise). ``map``
    returns ``None``: remote bytes are always copied into a caller's buffer.

    Example::

        async with await HttpSource.open("http://127.0.0.1:8000/model.gguf") as source:
            header = await source.read(0, 4096)
    """

    url: str
    #: False when the server answered the opening range request with the whole object:
    #: only whole-object reads are possible then.
    accepts_ranges: bool

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        owns_session: bool,
        settings: _Settings,
        progress: ProgressCallback | None,
    ) -> None:
        """Use :meth:`open`; the constructor does no I/O and leaves the size unknown."""
        self.url = self.name = url
        self.size = 0
        self.identity = ""
        self.accepts_ranges = True
        self._session = session
        self._owns_session = owns_session
        self._settings = settings
        self._closed = False
        self._validator = Validator(None, None)
        self._meter = ProgressMeter(url, progress)
        self._reads_pending = 0
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._budget = ByteBudget(settings.max_inflight_bytes)
        self._request_options: dict[str, Any] = {
            "timeout": aiohttp.ClientTimeout(
                total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
            ),
            "auto_decompress": False,
            "raise_for_status": False,  # statuses are judged here, even on a shared session
            # Direct receive takes the socket over after the headers: a small aiohttp
            # buffer means few bytes take the slower path first.
            "read_bufsize": 256 * 1024 if settings.direct_receive else 4 * MiB,
        }

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        concurrency: int = 4,
        chunk_size: int = 8 * MiB,
        max_inflight_bytes: int = 64 * MiB,
        connect_timeout: float | None = 30.0,
        read_timeout: float | None = 30.0,
        retries: int = 5,
        backoff_base: float = 0.25,
        backoff_max: float = 20.0,
        retry_deadline: float = 300.0,
        progress: ProgressCallback | None = None,
        direct_receive: bool = True,
    ) -> HttpSource:
        """Learn the object's size and validator with one ``GET Range: bytes=0-0``.

        A one-byte GET is used rather than HEAD: it shows that the server honours ranges
        (206 with ``Content-Range: bytes 0-0/<size>``) and works where only GET is allowed
        (URLs pre-signed for GET). A 200 instead means no range support: the size comes
        from ``Content-Length`` and only whole-object reads work. A 416 with
        ``Content-Range: bytes */0`` is an empty object.

        Args:
            url: ``http://`` or ``https://`` URL (redirects are followed).
            session: a session to share; it is not closed by :meth:`aclose`. By default
                the source makes its own, with at most ``concurrency`` connections.
            concurrency: range requests in flight at once, across all reads.
            chunk_size: bytes per range request (at most ``max_inflight_bytes``).
            max_inflight_bytes: bytes requested but not yet received, across all reads.
            connect_timeout: seconds to open a connection.
            read_timeout: seconds without a byte before a request counts as stalled.
            retries: retries of one range after its first failed attempt.
            backoff_base, backoff_max: retry delay ``base * 2**k`` seconds (with jitter),
                at most ``backoff_max``, which also caps a server's ``Retry-After``.
            retry_deadline: no retry starts later than this many seconds after the
                range's first failure.
            progress: called with :class:`~pullweights.sources.progress.ProgressEvent`
                (``what`` = url; totals grow as reads are asked for).
            direct_receive: receive bodies with one copy where possible (see
                :mod:`pullweights.sources.http_receive`); ``False`` uses aiohttp's reader.

        Raises:
            SourceError: not an http(s) URL; 416 for a non-empty object.
            FetchError: a bad status, or the server unreachable after the retries.
            IntegrityError: an encoded body or a malformed ``Content-Range``.
            ValueError: a setting out of range.
        """
        parsed = yarl.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise SourceError(f"{url!r}: not an http:// or https:// URL")
        if concurrency < 1 or chunk_size < 1 or max_inflight_bytes < 1 or retries < 0:
            raise ValueError(
                "concurrency, chunk_size and max_inflight_bytes must be >= 1, retries >= 0"
            )
        settings = _Settings(
            concurrency=concurrency,
            chunk_size=min(chunk_size, max_inflight_bytes),
            max_inflight_bytes=max_inflight_bytes,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries=retries,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            retry_deadline=retry_deadline,
            direct_receive=direct_receive,
        )
        owns = session is None
        if session is None:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=concurrency), auto_decompress=False
            )
        source = cls(url, session, owns, settings, progress)
        try:
            await source._retrying(f"{url}: opening", source._probe)
        except BaseException:
            await source.aclose()
            raise
        source.identity = f"http:{url}|{source._validator.token}|{source.size}"
        return source

    async def _probe(self) -> None:
        headers = {"Range": "bytes=0-0", "Accept-Encoding": "identity"}
        async with self._session.get(self.url, headers=headers, **self._request_options) as resp:
            self.size, self.accepts_ranges = check_probe_response(
                self.url, resp.status, resp.headers
            )
            self._validator = Validator.from_headers(resp.headers)
            if resp.status == 206:
                await resp.read()  # one byte; lets the connection go back to the pool

    async def read_into(self, offset: int, out: memoryview) -> None:
        """Fill ``out`` with the bytes at ``offset`` (see the class docs for the checks).

        Raises:
            SourceError: the range is outside the object, the source is closed, or the
                server answered 416.
            FetchError: a bad status, a range still failing after the retries, or a
                partial read from a server without range support.
            IntegrityError: bytes that are not the ones asked for (wrong Content-Range,
                encoded or over-long body).
            RemoteChangedError: the object changed since :meth:`open`.
            ValueError: ``out`` is read-only.
        """
        view = memoryview(out).cast("B")  # any C-contiguous buffer, as bytes
        if view.readonly:
            raise ValueError(f"{self.name}: read_into needs a writable buffer")
        if self._closed:
            raise SourceError(f"{self.name}: source is closed")
        self.check_range(offset, len(view))
        if not view:
            return
        if self.accepts_ranges:
            step = self._settings.chunk_size
            pieces = [(offset + i, view[i : i + step]) for i in range(0, len(view), step)]
        elif offset == 0 and len(view) == self.size:
            pieces = [(0, view)]
        else:
            raise FetchError(
                f"{self.url}: the server does not support range requests; only the whole "
                f"object (0-{self.size - 1}) can be read, not bytes {offset}-"
                f"{offset + len(view) - 1}"
            )
        received = [0]

        def count(nbytes: int) -> None:
            received[0] += nbytes
            self._meter.advance(nbytes)

        self._meter.expect(len(view))
        self._reads_pending += 1
        try:
            await self._run_pieces(pieces, count)
        finally:
            self._meter.expect(received[0] - len(view))  # take back what never came
            self._reads_pending -= 1
            if self._reads_pending == 0:
                self._meter.finish()

    async def _run_pieces(
        self, pieces: list[tuple[int, memoryview]], count: Callable[[int], None]
    ) -> None:
        if len(pieces) == 1:
            await self._fetch_range(*pieces[0], count)
            return
        queue = iter(pieces)

        async def worker() -> None:
            for start, view in queue:
                await self._fetch_range(start, view, count)

        workers = [
            asyncio.create_task(worker())
            for _ in range(min(self._settings.concurrency, len(pieces)))
        ]
        try:
            await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        for task in workers:
            if not task.cancelled() and (error := task.exception()) is not None:
                raise error

    async def _fetch_range(
        self, start: int, view: memoryview, count: Callable[[int], None]
    ) -> None:
        done = 0

        def arrived(nbytes: int) -> None:
            nonlocal done
            done += nbytes
            count(nbytes)

        async def attempt() -> None:
            nonlocal done
            if done and not self.accepts_ranges:  # no resume without ranges: start over
                count(-done)
                done = 0
            remaining = view[done:]
            async with self._budget.hold(len(remaining)), self._slots:
                await self._get(start + done, remaining, arrived)

        await self._retrying(f"{self.url}: bytes {start}-{start + len(view) - 1}", attempt)

    async def _get(self, start: int, out: memoryview, arrived: Callable[[int], None]) -> None:
        stop = start + len(out)
        headers = {
            "Range": f"bytes={start}-{stop - 1}",
            "Accept-Encoding": "identity",
            **self._validator.precondition_headers(),
        }
        async with self._session.get(self.url, headers=headers, **self._request_options) as resp:
            check_range_response(
                self.url, resp.status, resp.headers, start, stop, self.size, self._validator
            )
            await receive_body(
                resp,
                out,
                arrived,
                where=f"{self.url}: bytes {start}-{stop - 1}",
                read_timeout=self._settings.read_timeout,
                direct=self._settings.direct_receive,
            )

    async def _retrying(self, where: str, attempt: Callable[[], Awaitable[None]]) -> None:
        """Run ``attempt`` until it succeeds, retrying transient failures.

        The one boundary where aiohttp and asyncio errors become pullweights errors.
        """
        loop = asyncio.get_running_loop()
        attempts = 0
        first_failure: float | None = None
        while True:
            attempts += 1
            try:
                await attempt()
                return
            except Transient as exc:
                transient = exc
            except PullWeightsError:
                raise
            except _FATAL_CLIENT_ERRORS as exc:
                raise FetchError(f"{where}: {type(exc).__name__}: {exc}") from exc
            except _FOREIGN_ERRORS as exc:
                transient = Transient(f"{type(exc).__name__}: {exc}".rstrip(": "))
                transient.__cause__ = exc
            now = loop.time()
            if first_failure is None:
                first_failure = now
            delay = self._delay(attempts, transient.retry_after)
            settings = self._settings
            if attempts > settings.retries or now + delay - first_failure > settings.retry_deadline:
                raise FetchError(
                    f"{where}: failed after {attempts} attempt{'s' * (attempts > 1)}; "
                    f"last error: {transient.reason}"
                ) from transient.__cause__
            await asyncio.sleep(delay)

    def _delay(self, attempts: int, retry_after: float | None) -> float:
        base, cap = self._settings.backoff_base, self._settings.backoff_max
        delay = min(cap, base * 2.0 ** (attempts - 1)) * random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, cap))
        return delay

    async def __aenter__(self) -> Self:
        return self

    async def aclose(self) -> None:
        """Close the session if this source made it. Safe to call twice."""
        self._closed = True
        if self._owns_session and not self._session.closed:
            await self._session.close()
