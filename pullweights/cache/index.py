"""Content keys, and the index from where bytes were read to what they are.

A weight entry is keyed by its *content*: SHA-256 of the raw bytes it was made from,
with the transform's name, version and parameters (or the raw descriptor). The same
GGUF under another path, a copy, or the same URL spelled another way
(``localhost`` / ``127.0.0.1``) therefore finds the entries stored before: nothing is
transformed or stored twice. SHA-256 (not a fast non-cryptographic hash): a model file
crafted to collide with another model's tensor must not be able to poison its entries.

A remote payload's content is known only once all of it is fetched; to find a cached
copy without transforming it first, the index also maps a digest of its first
:data:`HEAD` bytes to the content key (a hint, confirmed by the digest of all of them).

Hashing costs time (about 1-1.7 GB/s here, GIL released), so a second index maps the
payload's *source key* (:attr:`~pullweights.weights.Payload.key`: source identity —
path + size + mtime, URL + validator — and byte range) to its content key, one tiny
file per payload under ``index/<kk>/<source key>``; a warm load reads those and hashes
nothing. An index file is written (atomically) only after the content key was computed
from that source's bytes; a missing or garbled one is only a miss.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pullweights.cache.checksum import checksum
from pullweights.cache.confined import area, list_area, read_inside, replace_file
from pullweights.cache.layout import check_key
from pullweights.errors import CacheError
from pullweights.weights import Payload

__all__ = [
    "HEAD",
    "RunningDigest",
    "content_key",
    "digest",
    "head_key",
    "index_path",
    "iter_index",
    "lookup",
    "remember",
]

log = logging.getLogger("pullweights.cache")

#: Bytes hashed per call (hashlib releases the GIL for each).
_BLOCK = 64 << 20
#: Bump when the content key changes meaning.
_CONTENT_VERSION = 1
#: Bytes of a payload's start that find entries it may share (:func:`head_key`).
HEAD = 1 << 20


class RunningDigest:
    """The digest of bytes seen piece by piece, in order (the same value as
    :func:`digest` of their concatenation)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        #: Bytes seen so far.
        self.length = 0

    def update(self, data: mmap.mmap | memoryview | np.ndarray | bytes) -> None:
        with memoryview(data) as view, view.cast("B") as flat:
            for start in range(0, len(flat), _BLOCK):
                self._hash.update(flat[start : start + _BLOCK])
            self.length += len(flat)

    @property
    def value(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def digest(data: mmap.mmap | memoryview | np.ndarray | bytes) -> str:
    """``sha256:<hex>`` of a buffer's bytes."""
    running = RunningDigest()
    running.update(data)
    return running.value


def _payload_text(payload: Payload) -> list[str]:
    t = payload.transform
    return [
        str(payload.length),
        t.name if t else "raw",
        str(t.version) if t else "1",
        t.params if t else repr(payload.raw_descriptor),
    ]


def content_key(payload: Payload, raw_digest: str) -> str:
    """The entry key of ``payload`` whose raw bytes have digest ``raw_digest``."""
    text = "|".join(
        ["pullweights-content", str(_CONTENT_VERSION), raw_digest, *_payload_text(payload)]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def head_key(payload: Payload, head_digest: str) -> str:
    """The index key under which entries of payloads like ``payload`` whose raw bytes
    begin with :data:`HEAD` bytes of digest ``head_digest`` are found (a hint, confirmed
    by the digest of all the bytes: see :meth:`WeightCache.candidate`)."""
    text = "|".join(
        ["pullweights-head", str(_CONTENT_VERSION), head_digest, *_payload_text(payload)]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def index_path(root: Path, source_key: str) -> Path:
    """The index file of the payload with source key ``source_key``."""
    return root / "index" / source_key[:2] / source_key


def lookup(root: Path, source_key: str) -> str | None:
    """The content key recorded for ``source_key``, or None (never raises for a bad file)."""
    return _read_key(root, index_path(root, source_key))


def _line(source_key: str, key: str) -> bytes:
    """An index file: the content key and a checksum of both keys (a flipped byte is a miss)."""
    return f"{key} {checksum(f'{source_key} {key}'.encode())}\n".encode()


def _read_key(root: Path, path: Path) -> str | None:
    try:
        data = read_inside(root, path, limit=256)
        key = data.decode("ascii").partition(" ")[0]
        return check_key(key) if data == _line(path.name, key) else None
    except (OSError, UnicodeDecodeError, CacheError):
        return None


def remember(root: Path, source_key: str, key: str) -> None:
    """Record that ``source_key``'s bytes have content key ``key``.

    Raises:
        OSError: the index cannot be written (a read-only cache).
    """
    path = index_path(root, source_key)
    top = area(root, "index")
    prefix = area(top, path.parent.name)
    replace_file(root, prefix / path.name, _line(source_key, key))


def iter_index(root: Path) -> Iterator[tuple[Path, str | None]]:
    """Every index file: its path and the content key it holds (None: unreadable)."""
    for prefix in list_area(root / "index"):
        if not prefix.is_dir(follow_symlinks=False):
            yield Path(prefix.path), None
            continue
        for item in list_area(Path(prefix.path)):
            if item.name.startswith("."):
                continue  # a temporary file of a writer
            yield Path(item.path), _read_key(root, Path(item.path))
