"""Small derived artifacts kept next to the weights: ``<root>/blobs/<kind>-<key>.blob``.

A blob is bytes that are expensive to make again from a model's metadata and cheap to
read (a tokenizer's compiled model, for instance). Each file holds a short header — a
magic, the checksum of the payload, its length — then the payload; a file that fails the
check reads as absent (and is replaced on the next write), so a damaged blob costs one
rebuild and never a wrong answer. Writes are atomic (a temporary file, then a rename)
and confined to the cache directory (:mod:`pullweights.cache.confined`). A cache that
cannot be written just does not keep the blob.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import struct
from pathlib import Path

from pullweights.cache.checksum import checksum
from pullweights.cache.confined import Outside, area, list_area, read_inside, replace_file

__all__ = [
    "AREA",
    "MAX_BLOB",
    "blob_key",
    "blob_path",
    "list_blobs",
    "read_blob",
    "touch_blob",
    "trim_blobs",
    "write_blob",
]

log = logging.getLogger("pullweights.cache")

#: The cache area holding blobs.
AREA = "blobs"
#: Largest blob kept (a compiled tokenizer of a 262k vocabulary is ~6 MB).
MAX_BLOB = 256 << 20
_MAGIC = b"pwblob1\n"
_HEADER = struct.Struct("<8s32sQ")  # magic, checksum (ascii, padded), payload length
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def blob_path(root: Path, kind: str, key: str) -> Path:
    """Where blob ``kind``/``key`` lives (its area is made if missing)."""
    name = f"{kind}-{key}"
    if not _NAME_RE.match(kind) or not _NAME_RE.match(key) or len(name) > 128:
        raise ValueError(f"blob name {name!r} is not allowed")
    return area(root, AREA) / f"{name}.blob"


def blob_key(text: str) -> str:
    """A blob key for ``text`` of any length or alphabet (a source identity, a plan
    key): 40 hex digits of its SHA-256."""
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def touch_blob(root: Path, kind: str, key: str) -> None:
    """Mark blob ``kind``/``key`` as just used (:func:`trim_blobs` keeps the most
    recently used); nothing if it is gone."""
    with contextlib.suppress(OSError, ValueError):
        os.utime(blob_path(root, kind, key), follow_symlinks=False)


def list_blobs(root: Path, kind: str) -> list[Path]:
    """The files of every blob of ``kind``."""
    return [
        Path(e.path)
        for e in list_area(root / AREA)
        if e.name.startswith(f"{kind}-") and e.name.endswith(".blob")
    ]


def trim_blobs(root: Path, kind: str, keep: int) -> None:
    """Remove the least recently used blobs of ``kind`` (oldest mtime first; readers
    touch what they use) until at most ``keep`` are left."""
    files = list_blobs(root, kind)
    if len(files) <= keep:
        return
    with contextlib.suppress(OSError):
        files.sort(key=lambda p: p.stat(follow_symlinks=False).st_mtime_ns)
    for path in files[: len(files) - keep]:
        with contextlib.suppress(OSError):
            os.unlink(path)


def read_blob(root: Path, kind: str, key: str) -> bytes | None:
    """The payload of blob ``kind``/``key`` under the cache ``root``, or None when it is
    absent, damaged or unreadable."""
    try:
        path = blob_path(root, kind, key)
        data = read_inside(root, path, limit=MAX_BLOB + _HEADER.size)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (Outside, OSError) as exc:
        log.warning("cache blob %s-%s cannot be read: %s", kind, key, exc)
        return None
    if len(data) < _HEADER.size:
        return None
    magic, digest, length = _HEADER.unpack_from(data)
    payload = data[_HEADER.size :]
    if (
        magic != _MAGIC
        or length != len(payload)
        or digest.rstrip(b"\0").decode("ascii", "replace") != checksum(payload)
    ):
        log.warning("cache blob %s-%s is damaged; it is made again", kind, key)
        return None
    return payload


def write_blob(root: Path, kind: str, key: str, payload: bytes) -> bool:
    """Keep ``payload`` as blob ``kind``/``key`` (replacing one there); False when the
    cache cannot be written (nothing is kept, nothing fails)."""
    if len(payload) > MAX_BLOB:
        return False
    header = _HEADER.pack(_MAGIC, checksum(payload).encode("ascii"), len(payload))
    try:
        replace_file(root, blob_path(root, kind, key), header + payload)
    except (Outside, OSError) as exc:
        log.warning("cache blob %s-%s cannot be written: %s", kind, key, exc)
        return False
    return True
