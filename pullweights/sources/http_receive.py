"""Receiving one response body straight into the caller's buffer.

aiohttp delivers a body as ``bytes`` chunks: the kernel copies into a receive buffer, the
HTTP parser copies each body slice into a new ``bytes``, and the reader copies that into
the destination — three copies and one Python call per ~64-256 KiB, which tops out at
about half of curl's loopback rate (DESIGN.md). The direct path here keeps aiohttp for
everything up to the headers (connection pool, proxies, redirects, header parsing), then
lends the socket to a small :class:`asyncio.BufferedProtocol` whose ``get_buffer`` returns
the destination slice itself, so the kernel's ``recv_into`` is the only copy. When the body
is complete the socket goes back to aiohttp's protocol and the response is marked ended,
so the connection returns to the pool for the next range.

The direct path is taken only when it is safe: a body length known from
``Content-Length`` that equals the bytes wanted, a transport that can switch protocols
(asyncio's TCP and TLS transports both can; over TLS the record is decrypted straight into
the buffer) and the aiohttp internals it relies on present. Anything else uses
:func:`_receive_buffered`, the plain aiohttp reader. Stalls are detected with one timer
per ``read_timeout`` (re-armed from the time of the last data), since aiohttp's own
``sock_read`` timer only runs while its protocol has the socket.

Either way the byte count is checked exactly; a body that ends early is a
:class:`~pullweights.sources.http_validate.Transient` and the caller resumes after the
bytes that did arrive (``on_bytes`` reports them as they land).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp

from pullweights.errors import IntegrityError
from pullweights.sources.http_validate import Transient

__all__ = ["receive_body"]

OnBytes = Callable[[int], None]


async def receive_body(
    response: aiohttp.ClientResponse,
    out: memoryview,
    on_bytes: OnBytes,
    *,
    where: str,
    read_timeout: float | None,
    direct: bool = True,
    prefix: bool = False,
) -> None:
    """Write exactly ``len(out)`` body bytes of ``response`` into ``out``.

    With ``prefix`` the body may be longer: only its first ``len(out)`` bytes are read
    (the caller closes the response).

    ``where`` (URL and range) starts an :class:`IntegrityError`'s message; a
    :class:`Transient` names only the failure (the retry loop adds where).

    ``on_bytes(n)`` is called each time ``n`` more bytes have been written, in order, so
    after any failure the caller knows how many leading bytes of ``out`` are valid.

    Never reads more than ``len(out)`` body bytes: a body that goes on past them (a
    chunked response that never ends) is an :class:`IntegrityError` if the extra bytes
    have already arrived, else it is left unread and its connection is not reused.

    Raises:
        Transient: the body ended early or stalled for ``read_timeout`` seconds.
        IntegrityError: the body is longer than ``out``.
        aiohttp.ClientError, TimeoutError: from aiohttp's reader (translated by the caller).
    """
    wanted = len(out)
    content = response.content
    if wanted == 0:
        return
    try:
        pos = _drain_buffered(content, out, 0, on_bytes, prefix)
        if pos < wanted:
            handler = _direct_handler(response, wanted) if direct and not prefix else None
            if handler is not None:
                pos = await _receive_direct(handler, content, out, pos, on_bytes, read_timeout)
            else:
                pos = await _receive_buffered(content, out, pos, on_bytes, prefix)
        elif not prefix and content.read_nowait(1):
            raise IntegrityError(f"the body is longer than the {wanted} bytes asked for")
    except IntegrityError as exc:  # the helpers do not know the URL: say where
        raise IntegrityError(f"{where}: {exc}") from exc.__cause__
    if pos < wanted:
        raise Transient(f"the body ended after {pos} of {wanted} bytes")


def _store(out: memoryview, pos: int, data: bytes, on_bytes: OnBytes, prefix: bool) -> int:
    end = pos + len(data)
    if end > len(out):
        if not prefix:
            raise IntegrityError(f"the body is longer than the {len(out)} bytes asked for")
        data, end = data[: len(out) - pos], len(out)
    out[pos:end] = data
    on_bytes(len(data))
    return end


def _drain_buffered(
    content: aiohttp.StreamReader, out: memoryview, pos: int, on_bytes: OnBytes, prefix: bool
) -> int:
    """Copy what aiohttp has already buffered, without waiting; return the new position."""
    while pos < len(out):
        data = content.read_nowait(len(out) - pos + 1)  # one byte more shows a long body
        if not data:
            break
        pos = _store(out, pos, data, on_bytes, prefix)
    return pos


async def _receive_buffered(
    content: aiohttp.StreamReader, out: memoryview, pos: int, on_bytes: OnBytes, prefix: bool
) -> int:
    """The plain aiohttp path: one copy per chunk from aiohttp's buffer into ``out``.

    Stops when ``out`` is full, without waiting for the body to end: a body without a
    length (chunked) that goes on is never read past what was asked. Bytes beyond it
    that have already arrived are an error; any not yet arrived are never read (the
    connection is closed rather than reused, since the body did not end).
    """
    while pos < len(out):
        data = await content.readany()
        if not data:
            return pos
        pos = _store(out, pos, data, on_bytes, prefix)
    if not prefix and content.read_nowait(1):
        raise IntegrityError(f"the body is longer than the {len(out)} bytes asked for")
    return pos


def _direct_handler(response: aiohttp.ClientResponse, wanted: int) -> Any | None:
    """aiohttp's protocol for this response if its socket can be lent out, else ``None``."""
    if response.headers.get("Content-Length", "").strip() != str(wanted):
        return None
    if "Transfer-Encoding" in response.headers:
        return None
    content = response.content
    if content.is_eof() or content.exception() is not None:
        return None
    connection = response.connection
    handler = connection.protocol if connection is not None else None
    transport = getattr(handler, "transport", None)
    if (
        handler is None
        or transport is None
        or transport.is_closing()
        or not hasattr(transport, "set_protocol")
        or transport.get_protocol() is not handler
        or getattr(handler, "_payload", None) is not content
    ):
        return None
    return handler


async def _receive_direct(
    handler: Any,
    content: aiohttp.StreamReader,
    out: memoryview,
    pos: int,
    on_bytes: OnBytes,
    read_timeout: float | None,
) -> int:
    loop = asyncio.get_running_loop()
    # aiohttp's own sock_read timer is re-armed only by its data_received, which does not
    # run while the socket is lent; the receiver watches for stalls itself.
    drop_timeout = getattr(handler, "_drop_timeout", None)
    if drop_timeout is not None:
        drop_timeout()
    receiver = _DirectReceiver(loop, handler, out, pos, on_bytes, read_timeout)
    try:
        await receiver.done
    finally:
        receiver.detach()
    # The body is complete: tell aiohttp so it hands the connection back to the pool.
    content.feed_eof()
    return receiver.pos


class _DirectReceiver(asyncio.BufferedProtocol):
    """Borrows the transport from aiohttp's protocol until ``out`` is full."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        handler: Any,
        out: memoryview,
        pos: int,
        on_bytes: OnBytes,
        read_timeout: float | None,
    ) -> None:
        self.pos = pos
        self.done: asyncio.Future[None] = loop.create_future()
        self._loop = loop
        self._handler = handler
        self._transport: asyncio.Transport = handler.transport
        self._out = out
        self._on_bytes = on_bytes
        self._read_timeout = read_timeout
        self._last_data = loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._attached = True
        if read_timeout:
            self._timer = loop.call_at(self._last_data + read_timeout, self._watch)
        self._transport.set_protocol(self)
        if not self._transport.is_reading():
            self._transport.resume_reading()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._out[self.pos :]

    def buffer_updated(self, nbytes: int) -> None:
        self.pos += nbytes
        self._last_data = self._loop.time()
        try:
            self._on_bytes(nbytes)
        except Exception as exc:  # a progress callback failed: stop, report it
            self._finish(exc)
            return
        if self.pos == len(self._out):
            self._finish(None)

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost reports the short body

    def connection_lost(self, exc: Exception | None) -> None:
        self.detach()
        self._handler.connection_lost(exc)
        error = Transient(f"the connection closed after {self.pos} of {len(self._out)} bytes")
        error.__cause__ = exc
        self._finish(error)

    def _watch(self) -> None:
        # One timer per read_timeout, not one per recv: re-armed from the last data.
        assert self._read_timeout is not None
        deadline = self._last_data + self._read_timeout
        if self._loop.time() >= deadline:
            self._timer = None
            self._finish(Transient(f"no data for {self._read_timeout} s (stalled)"))
        else:
            self._timer = self._loop.call_at(deadline, self._watch)

    def _finish(self, exc: BaseException | None) -> None:
        self.detach()
        if self.done.done():
            return
        if exc is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(exc)

    def detach(self) -> None:
        """Give the transport back to aiohttp's protocol (idempotent)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._attached:
            self._attached = False
            self._transport.set_protocol(self._handler)
