"""A hand-written HTTP/1.1 range server on 127.0.0.1 that misbehaves on request.

It writes every response byte itself, so tests control exactly what reaches the client
(aiohttp's own server would correct some faults). Without faults it is a correct range
server with keep-alive, ``ETag``/``Last-Modified``, ``If-Match`` (412) and ``If-Range``.
Each request takes the next queued :class:`Fault`, if any; every request is recorded in
:attr:`FaultServer.requests` (method, path and headers, names lower-cased)::

    async with FaultServer(data) as server:
        server.push(Fault("drop", after=1000))
        ...
        assert server.requests[-1].headers["range"] == "bytes=1000-4095"
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import ssl
import struct
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType

__all__ = ["FAULT_KINDS", "Fault", "FaultServer", "SeenRequest"]

FAULT_KINDS = frozenset(
    {
        "ignore_range",  # 200 with the whole object despite Range
        "wrong_content_range",  # 206 with the right body and a shifted Content-Range
        "short_content_length",  # 206 whose Content-Length/body is one byte short
        "short_body",  # 206 without Content-Length, closed after `after` bytes
        "drop",  # 206 with Content-Length, connection closed after `after` bytes
        "reset",  # like drop, but a TCP RST
        "stall",  # `after` bytes, then nothing for `seconds`
        "status",  # `status` with an empty body and optional Retry-After
        "gzip",  # 206 with a gzip-encoded body
        "change",  # the object changes (new bytes and ETag) before this response
        "close_before_headers",  # connection closed without a response
        "silent",  # reads the request, then never answers (until closed)
        "drip_headers",  # the response headers, one byte every `seconds`
        "drip_body",  # the headers, then the body one byte every `seconds`
        "long_content_length",  # the body `after` bytes short of Content-Length; kept open
        "endless_chunked",  # 206, chunked, chunks of `after` bytes (64 KiB) that never end
    }
)


@dataclass(frozen=True)
class Fault:
    """One misbehaviour, used for one request."""

    kind: str
    after: int = 0
    status: int = 503
    retry_after: str | None = None
    seconds: float = 5.0  # how long a stall lasts; the interval of a drip
    pause: float = 0.0  # seconds between the `after` bytes and a drop or reset

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; one of {sorted(FAULT_KINDS)}")


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)


class FaultServer:
    """Serves ``data`` at every path; see the module docs.

    Args:
        data: the object's bytes.
        etag: its ETag (``None`` to send none).
        last_modified: its Last-Modified date (``None`` to send none).
        honour_preconditions: answer ``If-Match`` with 412 and a stale ``If-Range`` with
            200; ``False`` ignores both, like a server without precondition support.
        accept_ranges: ``False`` answers every request with 200 and the whole object.
        delay: seconds to wait before each response's headers.
        ssl_context: serve https with this server context.

    Counters for tests: :attr:`connections` accepted, :attr:`body_bytes_sent`, the most
    range bytes and requests
    being answered at once (:attr:`max_active_bytes`, :attr:`max_active_requests`; a
    request counts from its arrival until its response is written), responses
    :attr:`stalling` now.
    """

    def __init__(
        self,
        data: bytes,
        *,
        etag: str | None = '"v1"',
        last_modified: str | None = "Mon, 02 Jan 2006 15:04:05 GMT",
        honour_preconditions: bool = True,
        accept_ranges: bool = True,
        delay: float = 0.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.data = data
        self.etag = etag
        self.last_modified = last_modified
        self.honour_preconditions = honour_preconditions
        self.accept_ranges = accept_ranges
        self.delay = delay
        self.ssl_context = ssl_context
        self.faults: deque[Fault] = deque()
        self.requests: list[SeenRequest] = []
        self.active_bytes = 0
        self.max_active_bytes = 0
        self.active_requests = 0
        self.max_active_requests = 0
        self.connections = 0
        self.body_bytes_sent = 0
        self.stalling = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._active: dict[asyncio.StreamWriter, int] = {}

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/object.bin"

    def push(self, *faults: Fault) -> None:
        """Queue faults for the next requests, one each, in order."""
        self.faults.extend(faults)

    def change(self, data: bytes, etag: str | None) -> None:
        """Replace the object (new bytes and validator) from the next response on.

        A server without Last-Modified stays without it.
        """
        self.data, self.etag = data, etag
        if self.last_modified is not None:
            self.last_modified = "Tue, 03 Jan 2006 15:04:05 GMT"

    @property
    def ranges(self) -> list[str | None]:
        """The Range header of every request seen, in order."""
        return [request.headers.get("range") for request in self.requests]

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", 0, ssl=self.ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FaultServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            # close() cancels handlers; end normally so asyncio's start_server callback
            # does not log the cancellation as an error.
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; return whether the connection stays open."""
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        self.requests.append(SeenRequest(method, path, headers))
        fault = self.faults.popleft() if self.faults else None
        if fault is not None and fault.kind == "change":
            self.change(self.data[::-1] + b"!", '"v2"')
            fault = None
        if fault is not None and fault.kind == "close_before_headers":
            return False
        if fault is not None and fault.kind == "silent":
            await reader.read()  # until the client gives up and closes
            return False
        first, last = _parse_range(headers.get("range"), len(self.data))
        wanted = len(self.data) if first is None else max(last + 1 - first, 0)
        self._active[writer] = wanted
        self.active_requests += 1
        self.active_bytes += wanted
        self.max_active_requests = max(self.max_active_requests, self.active_requests)
        self.max_active_bytes = max(self.max_active_bytes, self.active_bytes)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            return await self._respond(writer, method, headers, fault)
        finally:
            self._answered(writer)

    def _answered(self, writer: asyncio.StreamWriter) -> None:
        """The response is written (the client may now see it end): stop counting it."""
        wanted = self._active.pop(writer, None)
        if wanted is not None:
            self.active_requests -= 1
            self.active_bytes -= wanted

    def _validator_headers(self) -> list[str]:
        lines = [] if self.last_modified is None else [f"Last-Modified: {self.last_modified}"]
        if self.etag is not None:
            lines.append(f"ETag: {self.etag}")
        return lines

    async def _send(
        self, writer: asyncio.StreamWriter, status: str, headers: list[str], body: bytes = b""
    ) -> None:
        head = f"HTTP/1.1 {status}\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
        writer.write(head.encode("latin-1") + body)
        self.body_bytes_sent += len(body)
        self._answered(writer)
        await writer.drain()

    async def _drip(self, writer: asyncio.StreamWriter, data: bytes, seconds: float) -> None:
        """Write ``data`` one byte every ``seconds``."""
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(seconds)

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        method: str,
        headers: dict[str, str],
        fault: Fault | None,
    ) -> bool:
        data, size = self.data, len(self.data)
        kind = fault.kind if fault is not None else None
        base = ["Accept-Ranges: bytes", "Content-Type: application/octet-stream"]
        base += self._validator_headers()
        if kind == "status":
            assert fault is not None
            extra = [f"Retry-After: {fault.retry_after}"] if fault.retry_after else []
            await self._send(writer, f"{fault.status} Fault", [*extra, "Content-Length: 0"])
            return True
        if_match = headers.get("if-match")
        if self.honour_preconditions and if_match not in (None, "*", self.etag):
            await self._send(writer, "412 Precondition Failed", ["Content-Length: 0"])
            return True
        first, last = _parse_range(headers.get("range"), size)
        if_range = headers.get("if-range")
        stale = if_range is not None and if_range not in (self.etag, self.last_modified)
        ignore = kind == "ignore_range" or not self.accept_ranges
        if first is None or ignore or (stale and self.honour_preconditions):
            if kind in ("drop", "reset", "stall"):  # the whole object, cut short
                return await self._send_body(writer, base, data, fault, "200 OK")
            await self._send(writer, "200 OK", [*base, f"Content-Length: {size}"], data)
            return True
        if first >= size:
            await self._send(
                writer,
                "416 Range Not Satisfiable",
                [f"Content-Range: bytes */{size}", "Content-Length: 0"],
            )
            return True
        body = data[first : last + 1]
        content_range = f"Content-Range: bytes {first}-{last}/{size}"
        if kind == "wrong_content_range":
            content_range = f"Content-Range: bytes {first + 1}-{last + 1}/{size}"
        elif kind == "short_content_length":
            body = body[:-1]
        elif kind == "gzip":
            body = gzip.compress(body)
            base.append("Content-Encoding: gzip")
        return await self._send_body(writer, [*base, content_range], body, fault)

    async def _send_body(
        self,
        writer: asyncio.StreamWriter,
        headers: list[str],
        body: bytes,
        fault: Fault | None,
        status: str = "206 Partial Content",
    ) -> bool:
        kind = fault.kind if fault is not None else None
        if kind in ("drip_headers", "drip_body", "long_content_length", "endless_chunked"):
            assert fault is not None
            return await self._send_slow(writer, headers, body, fault)
        if kind == "short_body":
            assert fault is not None
            await self._send(
                writer, "206 Partial Content", [*headers, "Connection: close"], body[: fault.after]
            )
            return False
        headers = [*headers, f"Content-Length: {len(body)}"]
        if kind in ("drop", "reset", "stall"):
            assert fault is not None
            await self._send(writer, status, headers, body[: fault.after])
            if fault.pause:
                await asyncio.sleep(fault.pause)
            if kind == "stall":
                self.stalling += 1
                try:
                    await asyncio.sleep(fault.seconds)
                finally:
                    self.stalling -= 1
            if kind == "reset":
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
            return False
        await self._send(writer, "206 Partial Content", headers, body)
        return True

    async def _send_slow(
        self, writer: asyncio.StreamWriter, headers: list[str], body: bytes, fault: Fault
    ) -> bool:
        """The faults that never finish on their own; each ends when the client closes."""
        status = "HTTP/1.1 206 Partial Content\r\n"
        if fault.kind == "endless_chunked":
            head = status + "".join(h + "\r\n" for h in headers)
            writer.write((head + "Transfer-Encoding: chunked\r\n\r\n").encode("latin-1"))
            self._answered(writer)
            chunk = bytes(fault.after or 65536)
            frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
            while True:
                writer.write(frame)
                self.body_bytes_sent += len(chunk)
                await writer.drain()
        head = status + "".join(h + "\r\n" for h in [*headers, f"Content-Length: {len(body)}"])
        head_bytes = (head + "\r\n").encode("latin-1")
        self._answered(writer)
        if fault.kind == "drip_headers":
            await self._drip(writer, head_bytes + body, fault.seconds)
        elif fault.kind == "drip_body":
            writer.write(head_bytes)
            await self._drip(writer, body, fault.seconds)
        else:
            sent = body[: max(len(body) - fault.after, 0)]
            writer.write(head_bytes + sent)
            self.body_bytes_sent += len(sent)
            await writer.drain()
            await asyncio.sleep(3600)  # the promised bytes never come
        return False


def _parse_range(value: str | None, size: int) -> tuple[int | None, int]:
    """``(first, last)`` of a single ``bytes=`` range, or ``(None, 0)`` for none/unparsable."""
    if value is None or not value.startswith("bytes=") or "," in value:
        return None, 0
    spec = value[len("bytes=") :].strip()
    start, _, end = spec.partition("-")
    try:
        if start == "":
            first, last = max(size - int(end), 0), size - 1
        else:
            first = int(start)
            last = min(int(end), size - 1) if end else size - 1
    except ValueError:
        return None, 0
    return first, last
