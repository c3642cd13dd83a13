"""A remote object read by HTTP range requests, checked byte for byte, bounded in time.

:class:`HttpSource` splits each read into ranges of ``chunk_size`` bytes, fetches up to
``concurrency`` of them at once over reused connections (and never more than
``max_inflight_bytes`` requested but not yet received), writes every body straight into
its slice of the caller's buffer and checks every response itself (see
:mod:`pullweights.sources.http_validate`): aiohttp raises nothing for a server that ignores
``Range``, sends the wrong range, a short or gzip body, or a changed object. No response
is ever read past the bytes asked for. All tuning comes from one
:class:`~pullweights.sources.http_settings.HttpSettings`.

Failures that a later attempt may fix (5xx, 408, 429, a refused or dropped connection, a
stall longer than ``read_timeout``, a request past its deadline) are retried with
exponential backoff and jitter, honouring ``Retry-After``; a range that was partly
received resumes after its last good byte. Each retry and each stall is reported as it
happens (:mod:`pullweights.sources.http_report`). Everything else, a range still failing
after the retries, and a load past its deadline raise one typed :mod:`pullweights.errors`
error. aiohttp and asyncio exceptions are translated in :meth:`HttpSource._retrying`, the
only place that awaits aiohttp, and chained as ``__cause__``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Self

import aiohttp
import yarl

from pullweights.errors import FetchError, PullWeightsError, SourceError
from pullweights.sources.base import ByteSource
from pullweights.sources.budget import ByteBudget
from pullweights.sources.http_receive import receive_body
from pullweights.sources.http_report import StallWatch, report_retry
from pullweights.sources.http_settings import HttpSettings
from pullweights.sources.http_validate import (
    Transient,
    Validator,
    check_probe_response,
    check_range_response,
)
from pullweights.sources.progress import ProgressCallback, ProgressMeter

__all__ = ["HttpSource"]

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


def _seconds(value: float | None) -> str:
    """A duration for a message: ``0.5``, ``12``, ``3600``."""
    return "?" if value is None else f"{value:.2g}" if value < 10 else f"{value:.0f}"


#: An attempt: given the stall watch of this attempt, do one request.
Attempt = Callable[[StallWatch], Awaitable[None]]


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
    #: only whole-object reads (and :meth:`read_head`) are possible then.
    accepts_ranges: bool
    #: Body bytes received from the network so far (retried bytes counted again).
    bytes_received: int

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        owns_session: bool,
        settings: HttpSettings,
        progress: ProgressCallback | None,
    ) -> None:
        """Use :meth:`open`; the constructor does no I/O and leaves the size unknown."""
        self.url = self.name = url
        self.size = 0
        self.identity = ""
        self.accepts_ranges = True
        self.bytes_received = 0
        self.settings = settings
        self._session = session
        self._owns_session = owns_session
        self._closed = False
        self._validator = Validator(None, None)
        self._meter = ProgressMeter(url, progress)
        self._reads_pending = 0
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._budget = ByteBudget(settings.max_inflight_bytes)
        # A server without range support answers the opening request with the whole
        # object: that response is kept, unread, for the first whole-object read.
        self._whole: aiohttp.ClientResponse | None = None
        self._last_failure = ""
        self._request_options: dict[str, Any] = {
            "timeout": aiohttp.ClientTimeout(
                total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
            ),
            "auto_decompress": False,
            "raise_for_status": False,  # statuses are judged here, even on a shared session
            "read_bufsize": settings.bufsize,
            "ssl": settings.ssl,
        }

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        settings: HttpSettings | None = None,
        session: aiohttp.ClientSession | None = None,
        progress: ProgressCallback | None = None,
        open_retries: int | None = None,
    ) -> HttpSource:
        """Learn the object's size and validator with one ``GET Range: bytes=0-0``.

        A one-byte GET is used rather than HEAD: it shows that the server honours ranges
        (206 with ``Content-Range: bytes 0-0/<size>``) and works where only GET is allowed
        (URLs pre-signed for GET). A 200 instead means no range support: the size comes
        from ``Content-Length``, the response is kept unread for a whole-object read, and
        only whole-object reads work. A 416 with ``Content-Range: bytes */0`` is an empty
        object.

        Args:
            url: ``http://`` or ``https://`` URL (redirects are followed).
            settings: timeouts, retries, sizes, headers and TLS (default
                :class:`HttpSettings()`).
            session: a session to share; it is not closed by :meth:`aclose`. By default
                the source makes its own, with at most ``settings.concurrency``
                connections.
            progress: called with :class:`~pullweights.sources.progress.ProgressEvent`
                (``what`` = url; totals grow as reads are asked for).
            open_retries: retries of the opening request, if not ``settings.retries``
                (a check that may fall back to something else need not insist).

        Raises:
            SourceError: not an http(s) URL; 416 for a non-empty object.
            FetchError: a bad status, the server unreachable after the retries, or no
                answer within the load deadline.
            IntegrityError: an encoded body or a malformed ``Content-Range``.
        """
        settings = settings or HttpSettings()
        parsed = yarl.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise SourceError(f"{url!r}: not an http:// or https:// URL")
        owns = session is None
        if session is None:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=settings.concurrency), auto_decompress=False
            )
        source = cls(url, session, owns, settings, progress)
        try:
            where = f"{url}: opening"
            opening = source._retrying(where, 1, source._probe, retries=open_retries)
            await source._within_load_deadline(where, 1, opening)
        except BaseException:
            await source.aclose()
            raise
        source.identity = f"http:{url}|{source._validator.token}|{source.size}"
        return source

    @property
    def validator(self) -> Validator:
        """The ETag / Last-Modified the object had at open."""
        return self._validator

    def _headers(self, own: Mapping[str, str]) -> dict[str, str]:
        return {**self.settings.headers, "Accept-Encoding": "identity", **own}

    def _counted(self, nbytes: int) -> None:
        self.bytes_received += nbytes

    async def _probe(self, watch: StallWatch) -> None:
        headers = self._headers({"Range": "bytes=0-0"})
        resp = await self._session.get(self.url, headers=headers, **self._request_options)
        kept = False
        try:
            watch.answered()
            self.size, self.accepts_ranges = check_probe_response(
                self.url, resp.status, resp.headers
            )
            self._validator = Validator.from_headers(resp.headers)
            if resp.status == 206:
                # One byte, never more, however long the body claims or turns out to be.
                probe = memoryview(bytearray(1))
                await receive_body(
                    resp,
                    probe,
                    self._counted,
                    where=f"{self.url}: opening (GET bytes=0-0)",
                    read_timeout=self.settings.read_timeout,
                    direct=False,
                )
            elif not self.accepts_ranges and self.size:
                self._whole, kept = resp, True
        finally:
            if not kept:
                resp.release()  # a body not read to its end closes the connection

    async def read_into(self, offset: int, out: memoryview) -> None:
        """Fill ``out`` with the bytes at ``offset`` (see the class docs for the checks).

        Raises:
            SourceError: the range is outside the object, the source is closed, or the
                server answered 416.
            FetchError: a bad status, a range still failing after the retries, the load
                deadline passed, or a partial read from a server without range support.
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
            step = self.settings.chunk_size
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
            where = f"{self.url}: bytes {offset}-{offset + len(view) - 1}"
            await self._within_load_deadline(where, len(view), self._run_pieces(pieces, count))
        finally:
            self._meter.expect(received[0] - len(view))  # take back what never came
            self._reads_pending -= 1
            if self._reads_pending == 0:
                self._meter.finish()

    async def read_head(self, length: int) -> bytes:
        """The first ``length`` bytes, also from a server without range support.

        Without range support the whole object is requested (or the response kept from
        :meth:`open` is used) and only its first ``length`` bytes are read; the rest of
        that response is never received (its connection is closed).

        Raises:
            the errors of :meth:`read_into`.
        """
        length = min(max(length, 0), self.size)
        if self.accepts_ranges or length == self.size:
            return await self.read(0, length)
        if self._closed:
            raise SourceError(f"{self.name}: source is closed")
        buf = bytearray(length)
        view = memoryview(buf)
        where = f"{self.url}: bytes 0-{length - 1}"

        async def attempt(watch: StallWatch) -> None:
            def arrived(nbytes: int) -> None:
                self._counted(nbytes)
                watch.data()

            resp = self._take_whole() or await self._session.get(
                self.url, headers=self._headers({}), **self._request_options
            )
            try:
                watch.answered()
                check_range_response(
                    self.url, resp.status, resp.headers, 0, self.size, self.size, self._validator
                )
                await receive_body(
                    resp,
                    view,
                    arrived,
                    where=where,
                    read_timeout=self.settings.read_timeout,
                    direct=False,
                    prefix=True,
                )
            finally:
                resp.close()  # the rest of the body is not wanted

        await self._within_load_deadline(where, length, self._retrying(where, length, attempt))
        return bytes(buf)

    def _take_whole(self) -> aiohttp.ClientResponse | None:
        resp, self._whole = self._whole, None
        return resp

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
            for _ in range(min(self.settings.concurrency, len(pieces)))
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

        async def attempt(watch: StallWatch) -> None:
            nonlocal done

            def arrived(nbytes: int) -> None:
                nonlocal done
                done += nbytes
                self._counted(nbytes)
                count(nbytes)
                watch.data()

            if done and not self.accepts_ranges:  # no resume without ranges: start over
                count(-done)
                done = 0
            remaining = view[done:]
            async with self._budget.hold(len(remaining)), self._slots:
                await self._get(start + done, remaining, arrived, watch)

        where = f"{self.url}: bytes {start}-{start + len(view) - 1}"
        await self._retrying(where, len(view), attempt)

    async def _get(
        self,
        start: int,
        out: memoryview,
        arrived: Callable[[int], None],
        watch: StallWatch,
    ) -> None:
        stop = start + len(out)
        resp = self._take_whole() if not self.accepts_ranges else None
        if resp is None:
            headers = self._headers(
                {"Range": f"bytes={start}-{stop - 1}", **self._validator.precondition_headers()}
            )
            resp = await self._session.get(self.url, headers=headers, **self._request_options)
        async with resp:
            watch.answered()
            check_range_response(
                self.url, resp.status, resp.headers, start, stop, self.size, self._validator
            )
            await receive_body(
                resp,
                out,
                arrived,
                where=f"{self.url}: bytes {start}-{stop - 1}",
                read_timeout=self.settings.read_timeout,
                direct=self.settings.direct_receive,
            )

    async def _within_load_deadline(self, where: str, nbytes: int, work: Awaitable[None]) -> None:
        """Await ``work``; a :class:`FetchError` if it takes longer than the load deadline."""
        limit = self.settings.load_deadline(nbytes)
        try:
            async with asyncio.timeout(limit) as timer:
                await work
        except TimeoutError as exc:
            if not timer.expired():
                raise
            last = f"; last error: {self._last_failure}" if self._last_failure else ""
            raise FetchError(
                f"{where}: not done within {_seconds(limit)} s (the load deadline, "
                f"HttpSettings.load_timeout){last}"
            ) from exc

    async def _retrying(
        self, where: str, nbytes: int, attempt: Attempt, *, retries: int | None = None
    ) -> None:
        """Run ``attempt`` until it succeeds, retrying transient failures.

        Each attempt has the request deadline for ``nbytes`` and a stall watch. The one
        boundary where aiohttp and asyncio errors become pullweights errors.
        """
        loop = asyncio.get_running_loop()
        settings = self.settings
        retries = settings.retries if retries is None else retries
        attempts = 0
        first_failure: float | None = None
        while True:
            attempts += 1
            limit = settings.request_deadline(nbytes)
            watch = StallWatch(where, settings.stall_report, settings.read_timeout)
            try:
                try:
                    async with asyncio.timeout(limit) as timer:
                        await attempt(watch)
                except TimeoutError as exc:
                    if not timer.expired():
                        raise
                    expired = Transient(
                        f"no complete response within {_seconds(limit)} s (the request deadline, "
                        "HttpSettings.request_timeout)"
                    )
                    raise expired from exc
                finally:
                    watch.stop()
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
            self._last_failure = transient.reason
            now = loop.time()
            if first_failure is None:
                first_failure = now
            delay = self._delay(attempts, transient.retry_after)
            if attempts > retries or now + delay - first_failure > settings.retry_deadline:
                raise FetchError(
                    f"{where}: failed after {attempts} attempt{'s' * (attempts > 1)}; "
                    f"last error: {transient.reason}"
                ) from transient.__cause__
            report_retry(where, attempts, transient.reason, delay)
            await asyncio.sleep(delay)

    def _delay(self, attempts: int, retry_after: float | None) -> float:
        base, cap = self.settings.backoff_base, self.settings.backoff_max
        delay = min(cap, base * 2.0 ** (attempts - 1)) * random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, cap))
        return delay

    async def __aenter__(self) -> Self:
        return self

    async def aclose(self) -> None:
        """Close the session if this source made it. Safe to call twice."""
        self._closed = True
        whole = self._take_whole()
        if whole is not None:
            whole.close()
        if self._owns_session and not self._session.closed:
            await self._session.close()
