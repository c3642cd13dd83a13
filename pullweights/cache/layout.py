"""Where cache entries live on disk, and their zarr v3 metadata.

::

    <root>/
      entries/zarr.json                 zarr group: the whole cache is one zarr hierarchy
      entries/<kk>/zarr.json            group per two-hex-digit key prefix
      entries/<kk>/<key>/zarr.json      entry group; its "pullweights" attribute is the entry
                                        record (:mod:`~pullweights.cache.record`), written last
      entries/<kk>/<key>/<part>/zarr.json          array metadata: bytes codec only
      entries/<kk>/<key>/<part>/c/0/0              the chunk: raw C-order bytes, no header
      sessions/<key>/session.json       a saved session's record, written last
      sessions/<key>/<file>             its files (an optimized model, its data)
      index/<kk>/<source key>           source identity -> content key (:mod:`.index`)
      models/<model key>.json           which entries and sessions a model uses (:mod:`.models`)
      remote/                           remembered URL headers (:mod:`pullweights.sources.remote`)
      verified/<kind>-<key>             entries verified unchanged since (:mod:`.stamps`)
      blobs/<kind>-<key>.blob           derived artifacts: compiled tokenizers, parsed GGUF
                                        headers (:mod:`.blobs`, :mod:`.headers`)
      staging/<key>.<pid>.<token>/      an entry being written (same layout, not yet visible)
      trash/                            entries and staging dirs being deleted

A weight entry's key is its *content key*: a digest of the raw bytes it was made from
and of the transform that made it, so the same bytes are stored once whatever path or
URL they were read from. Each array is one chunk covering the whole array (``c`` for a
0-d array, ``c/0/0`` for a 2-d one, no file for an array with no elements), stored
without compression, so the chunk file *is* the array and reads are a ``mmap`` of it.
The metadata follows the Zarr v3 specification and is written here as JSON (the ``zarr``
package costs 0.25-0.75 s to import and ~1.6 ms per array created, and is only needed by
readers that want it).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pullweights.cache.confined import list_area
from pullweights.dtypes import DataType, to_numpy
from pullweights.errors import CacheError

__all__ = [
    "ZARR_JSON",
    "CorruptEntry",
    "array_metadata",
    "check_key",
    "check_part_name",
    "chunk_relpath",
    "entry_dir",
    "group_metadata",
    "iter_entry_dirs",
    "iter_session_dirs",
    "session_dir",
]

#: Name of the zarr metadata file of every node.
ZARR_JSON = "zarr.json"

_KEY_RE = re.compile(r"^[0-9a-f]{8,64}$")
_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class CorruptEntry(Exception):
    """An entry's files disagree with its record (internal; mapped to a cache problem)."""


def check_key(key: str) -> str:
    """Return ``key`` if it looks like a cache key (lowercase hex), else raise CacheError."""
    if not _KEY_RE.match(key):
        raise CacheError(f"{key!r} is not a cache key (expected 8 to 64 lowercase hex digits)")
    return key


def check_part_name(name: str) -> str:
    """Return ``name`` if it can be a zarr array name and a directory, else raise CacheError."""
    if not _PART_RE.match(name) or name == ZARR_JSON:
        raise CacheError(
            f"part name {name!r} cannot be stored: use letters, digits, '_', '.', '-' "
            "and start with a letter or digit"
        )
    return name


def entry_dir(root: Path, key: str) -> Path:
    """Directory of the committed entry ``key`` under the cache ``root``."""
    return root / "entries" / key[:2] / key


def chunk_relpath(shape: tuple[int, ...]) -> str | None:
    """Chunk file of a single-chunk array, relative to the array, or None if it has none.

    zarr's default chunk key encoding names chunk ``(0, 0)`` ``c/0/0`` and the only chunk
    of a 0-d array ``c``; an array with a zero-length dimension has no chunks at all.
    """
    if any(s == 0 for s in shape):
        return None
    return "/".join(["c", *("0" for _ in shape)])


def session_dir(root: Path, key: str) -> Path:
    """Directory of the committed session entry ``key`` under the cache ``root``."""
    return root / "sessions" / key


def iter_session_dirs(root: Path) -> Iterator[Path]:
    """Every directory under ``root/sessions`` named like a key (committed or not)."""
    for item in list_area(root / "sessions"):
        if item.is_dir(follow_symlinks=False) and _KEY_RE.match(item.name):
            yield Path(item.path)


def iter_entry_dirs(root: Path) -> Iterator[Path]:
    """Every directory under ``root/entries`` named like a key (committed or not)."""
    for prefix in list_area(root / "entries"):
        if not prefix.is_dir(follow_symlinks=False):
            continue
        for item in list_area(Path(prefix.path)):
            if item.is_dir(follow_symlinks=False) and _KEY_RE.match(item.name):
                yield Path(item.path)


def group_metadata(attributes: Mapping[str, Any] | None = None) -> bytes:
    """The ``zarr.json`` of a zarr v3 group."""
    meta = {"zarr_format": 3, "node_type": "group", "attributes": dict(attributes or {})}
    return json.dumps(meta, indent=1).encode()


def array_metadata(dtype: DataType, shape: tuple[int, ...], attributes: Mapping[str, Any]) -> bytes:
    """The ``zarr.json`` of a single-chunk, uncompressed zarr v3 array."""
    np_dtype = to_numpy(dtype)
    fill: bool | int | float = False if np_dtype.kind == "b" else 0.0 if np_dtype.kind == "f" else 0
    codec: dict[str, Any] = {"name": "bytes"}
    if np_dtype.itemsize > 1:
        codec["configuration"] = {"endian": sys.byteorder}
    meta = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(shape),
        "data_type": dtype,
        # zarr requires chunk lengths >= 1; a zero-length dimension then has zero chunks.
        "chunk_grid": {
            "name": "regular",
            "configuration": {"chunk_shape": [max(1, s) for s in shape]},
        },
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill,
        "codecs": [codec],
        "attributes": dict(attributes),
        "storage_transformers": [],
    }
    return json.dumps(meta, indent=1).encode()
