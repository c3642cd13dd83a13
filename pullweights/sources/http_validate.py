"""Checks on every HTTP response a range read receives; aiohttp checks none of them.

aiohttp 3.14 raises nothing for a 200 that ignored ``Range``, a wrong ``Content-Range``, a
short body, a 416/503 or a changed object, and silently decodes gzip. Each response is
therefore classified here, from its status and headers alone, before a body byte is used:

- the bytes asked for arrive (206 with the exact ``Content-Range``, or a 200 carrying the
  whole object when the whole object was asked for) -> the body may be read;
- the server may do better on a later attempt (5xx, 408, 429) -> :class:`Transient`;
- anything else -> one typed pullweights error, never retried.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from pullweights.errors import FetchError, IntegrityError, RemoteChangedError, SourceError

__all__ = [
    "Transient",
    "Validator",
    "check_encoding",
    "check_probe_response",
    "check_range_response",
    "check_transient",
    "parse_content_range",
    "parse_retry_after",
    "parse_unsatisfied_total",
]

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.ASCII)
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)", re.ASCII)
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class Transient(Exception):
    """Internal signal: this attempt failed in a way a later attempt may not.

    Never escapes the HTTP source: after the last retry it becomes a
    :class:`~pullweights.errors.FetchError` chained to the underlying cause.
    """

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Validator:
    """What identifies one version of a remote object: its ETag, else its Last-Modified."""

    etag: str | None
    last_modified: str | None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Validator:
        return cls(headers.get("ETag"), headers.get("Last-Modified"))

    @property
    def token(self) -> str:
        """The validator as one string for identities and messages."""
        if self.etag is not None:
            return self.etag
        if self.last_modified is not None:
            return "last-modified:" + self.last_modified
        return "no-validator"

    def precondition_headers(self) -> dict[str, str]:
        """Headers that make a conforming server refuse (412) a changed object.

        ``If-Match`` needs a strong ETag (a weak one never matches, so it is not sent);
        without one, ``If-Unmodified-Since`` with the Last-Modified date.
        """
        if self.etag is not None:
            return {} if self.etag.startswith("W/") else {"If-Match": self.etag}
        if self.last_modified is not None:
            return {"If-Unmodified-Since": self.last_modified}
        return {}

    def check(self, where: str, headers: Mapping[str, str]) -> None:
        """Raise :class:`RemoteChangedError` unless ``headers`` carry this same validator."""
        if self.etag is not None:
            seen, name, expected = headers.get("ETag"), "ETag", self.etag
        elif self.last_modified is not None:
            seen, name, expected = headers.get("Last-Modified"), "Last-Modified", self.last_modified
        else:
            return
        if seen != expected:
            raise RemoteChangedError(
                f"{where}: the object changed while it was read: {name} is {seen!r}, "
                f"was {expected!r} when it was opened"
            )


def parse_content_range(value: str) -> tuple[int, int, int | None]:
    """Parse ``bytes first-last/total`` into ``(first, last, total)``; total ``None`` for ``*``.

    Raises:
        ValueError: ``value`` is not a satisfied byte range.
    """
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"not a byte Content-Range: {value!r}")
    first, last, total = match.groups()
    return int(first), int(last), None if total == "*" else int(total)


def parse_unsatisfied_total(value: str | None) -> int | None:
    """The total of a 416's ``Content-Range: bytes */total``, or ``None``."""
    match = _UNSATISFIED_RANGE.fullmatch((value or "").strip())
    return int(match.group(1)) if match else None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def check_encoding(where: str, headers: Mapping[str, str]) -> None:
    """Raise :class:`IntegrityError` for any ``Content-Encoding`` but identity.

    The request says ``Accept-Encoding: identity`` and the session never decodes, so an
    encoded body would be wrong bytes at the right length, or the wrong length.
    """
    encoding = headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise IntegrityError(
            f"{where}: the server sent Content-Encoding {encoding!r} although identity was "
            "asked for; refusing to decode it"
        )


def check_transient(status: int, headers: Mapping[str, str]) -> None:
    """Raise :class:`Transient` for a status a later attempt may not get (5xx, 408, 429)."""
    if status in _RETRY_STATUSES or 500 <= status < 600:
        raise Transient(f"HTTP {status}", parse_retry_after(headers.get("Retry-After")))


def check_probe_response(url: str, status: int, headers: Mapping[str, str]) -> tuple[int, bool]:
    """``(size, accepts_ranges)`` from the answer to ``GET`` with ``Range: bytes=0-0``.

    Raises:
        Transient: 408, 425, 429, 5xx.
        SourceError: 416 for a non-empty object.
        IntegrityError: an encoded body, or a Content-Range that is not ``bytes 0-0/<size>``.
        FetchError: any other status; a 200 without ``Content-Length``.
    """
    where = f"{url}: opening (GET bytes=0-0)"
    check_transient(status, headers)
    if status == 416:
        if parse_unsatisfied_total(headers.get("Content-Range")) != 0:
            raise SourceError(f"{where}: HTTP 416 for the first byte of the object")
        return 0, True
    if status not in (200, 206):
        raise FetchError(f"{where}: HTTP {status}")
    check_encoding(where, headers)
    if status == 200:
        length = headers.get("Content-Length", "").strip()
        if not length.isdigit():
            raise FetchError(f"{where}: the server ignores Range and sends no Content-Length")
        return int(length), False
    content_range = headers.get("Content-Range", "")
    try:
        first, last, total = parse_content_range(content_range)
    except ValueError as exc:
        raise IntegrityError(f"{where}: bad Content-Range {content_range!r}") from exc
    if (first, last) != (0, 0) or total is None:
        raise IntegrityError(f"{where}: Content-Range {content_range!r} is not 'bytes 0-0/<size>'")
    return total, True


def check_range_response(
    url: str,
    status: int,
    headers: Mapping[str, str],
    start: int,
    stop: int,
    size: int,
    validator: Validator,
) -> None:
    """Raise unless this response carries exactly bytes ``[start, stop)`` of the object.

    A 200 is accepted only when ``[start, stop)`` is the whole object (``0`` to ``size``):
    its body is then exactly the bytes asked for. A 200 to any other range means the
    server ignored ``Range``; reading it would mean discarding bytes or returning the
    wrong ones, so it is refused.

    Raises:
        Transient: 408, 425, 429, 5xx (with the ``Retry-After`` delay if one was given).
        RemoteChangedError: 412, or a different ETag / Last-Modified than at open.
        IntegrityError: a body encoding, or a Content-Range / Content-Length that is not
            the range asked for.
        SourceError: 416, the range is outside the object as the server sees it.
        FetchError: any other status, or a 200 for part of the object.
    """
    where = f"{url}: bytes {start}-{stop - 1}"
    check_transient(status, headers)
    if status == 412:
        raise RemoteChangedError(
            f"{where}: HTTP 412, the object no longer matches validator {validator.token}"
        )
    if status == 416:
        server_range = headers.get("Content-Range", "no Content-Range")
        raise SourceError(
            f"{where}: HTTP 416 range not satisfiable (server: {server_range}; size at open {size})"
        )
    if status not in (200, 206):
        raise FetchError(f"{url}: HTTP {status} for bytes {start}-{stop - 1}")
    validator.check(where, headers)
    check_encoding(where, headers)
    if status == 200:
        if start != 0 or stop != size:
            raise FetchError(
                f"{where}: the server ignored the Range header (HTTP 200 with the whole "
                f"object of {headers.get('Content-Length', 'unknown')} bytes)"
            )
        expected = size
    else:
        content_range = headers.get("Content-Range")
        try:
            first, last, total = parse_content_range(content_range or "")
        except ValueError as exc:
            raise IntegrityError(f"{where}: bad Content-Range {content_range!r}") from exc
        if (first, last + 1, total) != (start, stop, size):
            raise IntegrityError(
                f"{where}: the server sent Content-Range {content_range!r}, expected "
                f"'bytes {start}-{stop - 1}/{size}'"
            )
        expected = stop - start
    length = headers.get("Content-Length")
    if length is not None and length.strip() != str(expected):
        raise IntegrityError(
            f"{where}: Content-Length {length} does not match the {expected} bytes of the range"
        )
