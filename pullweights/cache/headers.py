"""Parsed GGUF headers kept by source identity, so a warm load does not parse them again.

``<root>/headers/<digest of the source identity>`` holds one header in
:mod:`pullweights.gguf.header_codec`'s format behind a CRC-32C of it. The identity
(:attr:`~pullweights.sources.ByteSource.identity`: path + size + mtime, URL + validator
+ size) changes with the file, so a changed file misses and is parsed again; the
same trust the weight index places in it (:mod:`.index`). A missing, damaged or
unreadable header file is only a miss (a damaged one is removed); a cache that cannot be
written keeps none. At most :data:`MAX_HEADERS` are kept, the least recently used
removed first (a 262k-token vocabulary encodes to ~6 MB).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import struct
from pathlib import Path

from pullweights.cache.checksum import checksum
from pullweights.cache.confined import area, list_area, read_inside, replace_file
from pullweights.gguf.header import MAX_HEADER_BYTES, RawHeader
from pullweights.gguf.header_codec import decode_header, encode_header

__all__ = ["AREA", "MAX_HEADERS", "HeaderStore"]

log = logging.getLogger("pullweights.cache")

#: The cache area holding headers.
AREA = "headers"
#: Most headers kept.
MAX_HEADERS = 16
_CRC = struct.Struct("<20s")


class HeaderStore:
    """The parsed-header area of one cache directory (``get``/``put`` by source identity).

    Example (what :func:`~pullweights.gguf.open_gguf` does with ``headers=``)::

        header = store.get(source.identity) or await read_header(source)
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, identity: str) -> Path:
        return self.root / AREA / hashlib.sha256(identity.encode()).hexdigest()[:40]

    def get(self, identity: str) -> RawHeader | None:
        """The header stored for ``identity``, or None. Blocking (a few MB read)."""
        if not identity:
            return None
        path = self._path(identity)
        try:
            data = read_inside(self.root, path, limit=2 * MAX_HEADER_BYTES)
        except OSError:
            return None
        try:
            tag = _CRC.unpack_from(data)[0].rstrip(b"\0").decode()
            body = data[_CRC.size :]
            if checksum(body) != tag:
                raise ValueError("checksum mismatch")
            header = decode_header(body)
        except (ValueError, struct.error, UnicodeDecodeError) as exc:
            log.warning("stored GGUF header %s is damaged (%s); it is removed", path, exc)
            with contextlib.suppress(OSError):
                os.unlink(path)
            return None
        with contextlib.suppress(OSError):
            os.utime(path, follow_symlinks=False)  # recently used
        return header

    def put(self, identity: str, header: RawHeader) -> None:
        """Keep ``header`` for ``identity`` (nothing if it cannot be encoded exactly or
        the cache cannot be written). Blocking."""
        if not identity:
            return
        body = encode_header(header)
        if body is None:
            return
        try:
            directory = area(self.root, AREA)
            replace_file(self.root, self._path(identity), _CRC.pack(checksum(body).encode()) + body)
            self._trim(directory)
        except OSError as exc:
            log.debug("GGUF header not stored: %s", exc)

    def discard(self, identity: str) -> None:
        """Forget the header stored for ``identity`` (the file disagreed with it)."""
        if identity:
            log.warning("stored GGUF header of %s does not fit the file; it is removed", identity)
            with contextlib.suppress(OSError):
                os.unlink(self._path(identity))

    def _trim(self, directory: Path) -> None:
        items = [e for e in list_area(directory) if not e.name.startswith(".")]
        if len(items) <= MAX_HEADERS:
            return
        items.sort(key=lambda e: e.stat(follow_symlinks=False).st_mtime_ns)
        for item in items[: len(items) - MAX_HEADERS]:
            with contextlib.suppress(OSError):
                os.unlink(item.path)
