"""Parsed GGUF headers kept by source identity, so a warm load does not parse them again.

Each header is a blob (:mod:`.blobs`: checksummed, written atomically) of kind
``gguf-header``, keyed by a digest of the source identity, in
:mod:`pullweights.gguf.header_codec`'s format. The identity
(:attr:`~pullweights.sources.ByteSource.identity`: path + size + mtime, URL + validator
+ size) changes with the file, so a changed file misses and is parsed again; the same
trust the weight index places in it (:mod:`.index`). A missing or damaged header is only
a miss (a damaged one is replaced when the file is parsed); a cache that cannot be
written keeps none. At most :data:`MAX_HEADERS` are kept, the least recently used
removed first (a 262k-token vocabulary encodes to ~6 MB).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from pullweights.cache.blobs import (
    AREA,
    blob_key,
    blob_path,
    read_blob,
    touch_blob,
    trim_blobs,
    write_blob,
)
from pullweights.gguf.header import RawHeader
from pullweights.gguf.header_codec import decode_header, encode_header

__all__ = ["AREA", "MAX_HEADERS", "HeaderStore"]

log = logging.getLogger("pullweights.cache")

#: Most headers kept.
MAX_HEADERS = 16
#: The blob kind of a stored header.
KIND = "gguf-header"


class HeaderStore:
    """The parsed headers of one cache directory (``get``/``put`` by source identity).

    Example (what :func:`~pullweights.gguf.open_gguf` does with ``headers=``)::

        header = store.get(source.identity) or await read_header(source)
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def get(self, identity: str) -> RawHeader | None:
        """The header stored for ``identity``, or None. Blocking (a few MB read)."""
        if not identity:
            return None
        data = read_blob(self.root, KIND, blob_key(identity))
        if data is None:
            return None
        try:
            header = decode_header(data)
        except ValueError as exc:  # checksummed, so written by another version
            log.warning("stored GGUF header of %s cannot be read (%s)", identity, exc)
            return None
        touch_blob(self.root, KIND, blob_key(identity))
        return header

    def put(self, identity: str, header: RawHeader) -> None:
        """Keep ``header`` for ``identity`` (nothing if it cannot be encoded exactly or
        the cache cannot be written). Blocking."""
        body = encode_header(header) if identity else None
        if body is not None and write_blob(self.root, KIND, blob_key(identity), body):
            trim_blobs(self.root, KIND, MAX_HEADERS)

    def discard(self, identity: str) -> None:
        """Forget the header stored for ``identity`` (the file disagreed with it)."""
        if identity:
            log.warning("stored GGUF header of %s does not fit the file; it is removed", identity)
            self.forget(identity)

    def forget(self, identity: str) -> None:
        """Remove the header stored for ``identity``, if any (its model was removed)."""
        if identity:
            with contextlib.suppress(OSError, ValueError):
                os.unlink(blob_path(self.root, KIND, blob_key(identity)))
