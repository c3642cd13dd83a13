"""How HTTP sources fetch: one frozen value object, passed down unchanged.

:class:`HttpSettings` is given once (to :func:`pullweights.gguf.open_gguf`,
:meth:`~pullweights.sources.RemoteSource.open` or :meth:`~pullweights.sources.HttpSource.open`)
and travels to every request those make. Change one field with :meth:`HttpSettings.replace`::

    settings = pullweights.HttpSettings(retries=2, headers={"Authorization": "Bearer ..."})
    gguf = await open_gguf(url, http=settings)

Every transfer is bounded: a stall (no byte for ``read_timeout``), one request
(``request_timeout``), one load (``load_timeout``: opening a URL, or one ``read_into``
with all its range requests and retries) and the retries (``retries``, ``retry_deadline``)
each end in a :class:`~pullweights.errors.FetchError`. The request and load deadlines
grow with the bytes asked for, by ``nbytes / min_rate`` seconds, so a big read on a slow
link is not cut short while a server that drips a byte at a time still is.
"""

from __future__ import annotations

import dataclasses
import ssl as _ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["HttpSettings"]

MiB = 1 << 20

# Headers each request sets itself: a caller's value would break the checks.
_RESERVED_HEADERS = frozenset(
    {"range", "accept-encoding", "if-match", "if-unmodified-since", "if-range"}
)


@dataclass(frozen=True, kw_only=True)
class HttpSettings:
    """The tuning and limits of HTTP reads (every field has a working default).

    Attributes:
        concurrency: range requests in flight at once per URL.
        chunk_size: bytes per range request.
        max_inflight_bytes: bytes requested but not yet received per URL (the byte
            budget); ``chunk_size`` is capped to it.
        read_bufsize: aiohttp's read buffer in bytes; ``None``: 256 KiB with
            ``direct_receive``, else 4 MiB.
        connect_timeout: seconds to open a connection (``None``: no limit).
        read_timeout: seconds without a byte before a request counts as stalled and is
            retried (``None``: no limit).
        request_timeout: seconds one request may take, from sending it to the last body
            byte, plus ``nbytes / min_rate`` (``None``: no limit).
        load_timeout: seconds one load may take (opening a URL, or one ``read_into``:
            every range request and retry of it), plus ``nbytes / min_rate``
            (``None``: no limit).
        min_rate: bytes per second a transfer must average for the two deadlines above.
        retries: retries of one range after its first failed attempt.
        backoff_base: first retry delay in seconds; it doubles per retry (with jitter).
        backoff_max: longest retry delay, also the cap on a server's ``Retry-After``.
        retry_deadline: no retry starts later than this many seconds after the range's
            first failure.
        stall_report: while a request gets no byte, report it every this many seconds
            (a warning in the log and a ``stall`` event); ``None``: silent.
        direct_receive: receive bodies with one copy where possible (see
            :mod:`pullweights.sources.http_receive`); ``False`` uses aiohttp's reader.
        headers: extra request headers (``Authorization``, ``User-Agent``...). Range,
            encoding and precondition headers are set by the source and may not be given.
        ssl: ``True`` verifies certificates against the system's CAs, ``False`` does not
            verify, an :class:`ssl.SSLContext` verifies with it (a private CA, client
            certificates).

    Raises:
        ValueError: a field out of range (checked when the object is made).
    """

    concurrency: int = 4
    chunk_size: int = 8 * MiB
    max_inflight_bytes: int = 64 * MiB
    read_bufsize: int | None = None
    connect_timeout: float | None = 30.0
    read_timeout: float | None = 30.0
    request_timeout: float | None = 60.0
    load_timeout: float | None = 300.0
    min_rate: float = 64 * 1024
    retries: int = 5
    backoff_base: float = 0.25
    backoff_max: float = 20.0
    retry_deadline: float = 300.0
    stall_report: float | None = 10.0
    direct_receive: bool = True
    headers: Mapping[str, str] = field(default_factory=dict)
    ssl: _ssl.SSLContext | bool = True

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be >= 1"
            for name in ("concurrency", "chunk_size", "max_inflight_bytes")
            if getattr(self, name) < 1
        ]
        if self.read_bufsize is not None and self.read_bufsize < 1:
            problems.append("read_bufsize must be >= 1 or None")
        if self.retries < 0:
            problems.append("retries must be >= 0")
        for name in (
            "connect_timeout",
            "read_timeout",
            "request_timeout",
            "load_timeout",
            "stall_report",
        ):
            value = getattr(self, name)
            if value is not None and not value > 0:
                problems.append(f"{name} must be > 0 or None")
        for name in ("min_rate", "backoff_max", "retry_deadline"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0")
        if not self.backoff_base >= 0:
            problems.append("backoff_base must be >= 0")
        reserved = sorted(k for k in self.headers if k.lower() in _RESERVED_HEADERS)
        if reserved:
            problems.append(f"headers may not set {', '.join(reserved)} (the source sets them)")
        if problems:
            raise ValueError("HttpSettings: " + "; ".join(problems))
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))
        object.__setattr__(self, "chunk_size", min(self.chunk_size, self.max_inflight_bytes))

    def replace(self, **changes: Any) -> HttpSettings:
        """A copy with some fields changed (checked like a new object)."""
        return dataclasses.replace(self, **changes)

    def request_deadline(self, nbytes: int) -> float | None:
        """Seconds one request for ``nbytes`` of body may take, or ``None``."""
        if self.request_timeout is None:
            return None
        return self.request_timeout + nbytes / self.min_rate

    def load_deadline(self, nbytes: int) -> float | None:
        """Seconds one load of ``nbytes`` may take, or ``None``."""
        if self.load_timeout is None:
            return None
        return self.load_timeout + nbytes / self.min_rate

    @property
    def bufsize(self) -> int:
        """aiohttp's read buffer for these settings."""
        if self.read_bufsize is not None:
            return self.read_bufsize
        # Direct receive takes the socket over after the headers: a small aiohttp buffer
        # means few bytes take the slower path first.
        return 256 * 1024 if self.direct_receive else 4 * MiB
