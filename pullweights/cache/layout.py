"""Where cache entries live on disk, and their zarr v3 metadata.

::

    <root>/
      entries/zarr.json                 zarr group: the whole cache is one zarr hierarchy
      entries/<kk>/zarr.json            group per two-hex-digit key prefix
      entries/<kk>/<key>/zarr.json      entry group; its "pullweights" attribute is the entry
                                        record (parts, checksums, source) and is written last
      entries/<kk>/<key>/<part>/zarr.json          array metadata: bytes codec only
      entries/<kk>/<key>/<part>/c/0/0              the chunk: raw C-order bytes, no header
      staging/<key>.<pid>.<token>/      an entry being written (same layout, not yet visible)
      trash/                            entries and staging dirs being deleted

Each array is one chunk covering the whole array (``c`` for a 0-d array, ``c/0/0`` for a
2-d one, no file for an array with no elements), stored without compression, so the chunk
file *is* the array and reads are a ``mmap`` of it. The metadata follows the Zarr v3
specification and is written here as JSON (the ``zarr`` package costs 0.25-0.75 s to import
and ~1.6 ms per array created, and is only needed by readers that want it).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pullweights.dtypes import DataType, check_dtype, to_numpy
from pullweights.errors import CacheError

__all__ = [
    "CACHE_FORMAT",
    "EntryRecord",
    "PartRecord",
    "array_metadata",
    "check_key",
    "check_part_name",
    "chunk_relpath",
    "entry_dir",
    "group_metadata",
    "iter_entry_dirs",
    "read_record",
]

#: Version of the entry record; entries of another version are treated as absent.
CACHE_FORMAT = 1
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


@dataclass(frozen=True)
class PartRecord:
    """One stored array of an entry: its type, shape, byte size and checksum."""

    name: str
    dtype: DataType
    shape: tuple[int, ...]
    checksum: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * to_numpy(self.dtype).itemsize

    @property
    def chunk(self) -> str | None:
        return chunk_relpath(self.shape)


@dataclass(frozen=True)
class EntryRecord:
    """What an entry holds and where its bytes came from (the entry group's attributes)."""

    key: str
    label: str
    source: str
    source_name: str
    offset: int
    length: int
    transform: str
    params: str
    created: float
    parts: Mapping[str, PartRecord]

    @property
    def nbytes(self) -> int:
        """Bytes of array data (the chunk files)."""
        return sum(p.nbytes for p in self.parts.values())

    def to_attributes(self) -> dict[str, Any]:
        return {
            "pullweights": {
                "format": CACHE_FORMAT,
                "key": self.key,
                "label": self.label,
                "source": self.source,
                "source_name": self.source_name,
                "offset": self.offset,
                "length": self.length,
                "transform": self.transform,
                "params": self.params,
                "created": self.created,
                "parts": {
                    p.name: {"dtype": p.dtype, "shape": list(p.shape), "checksum": p.checksum}
                    for p in self.parts.values()
                },
            }
        }

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, Any]) -> EntryRecord:
        """Parse an entry group's attributes; raise CorruptEntry if they are not a record."""
        try:
            rec = attributes["pullweights"]
            if rec["format"] != CACHE_FORMAT:
                raise CorruptEntry(f"record format {rec['format']!r}, expected {CACHE_FORMAT}")
            parts = {
                name: PartRecord(
                    check_part_name(name),
                    check_dtype(p["dtype"]),
                    tuple(int(s) for s in p["shape"]),
                    str(p["checksum"]),
                )
                for name, p in rec["parts"].items()
            }
            return cls(
                key=check_key(rec["key"]),
                label=str(rec["label"]),
                source=str(rec["source"]),
                source_name=str(rec["source_name"]),
                offset=int(rec["offset"]),
                length=int(rec["length"]),
                transform=str(rec["transform"]),
                params=str(rec["params"]),
                created=float(rec["created"]),
                parts=parts,
            )
        except CorruptEntry:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, CacheError) as exc:
            raise CorruptEntry(f"entry record is malformed: {exc!r}") from exc


def read_record(directory: Path) -> EntryRecord:
    """Read the record of the entry in ``directory``.

    Raises:
        FileNotFoundError: there is no committed entry there.
        CorruptEntry: the metadata is not a valid record.
    """
    try:
        text = (directory / ZARR_JSON).read_bytes()
    except NotADirectoryError as exc:
        raise FileNotFoundError(str(directory)) from exc
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise CorruptEntry(f"{directory / ZARR_JSON} is not JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("node_type") != "group":
        raise CorruptEntry(f"{directory / ZARR_JSON} is not a zarr group")
    record = EntryRecord.from_attributes(meta.get("attributes", {}))
    if record.key != directory.name:
        raise CorruptEntry(f"record key {record.key} does not match directory {directory.name}")
    return record


def iter_entry_dirs(root: Path) -> Iterator[Path]:
    """Every directory under ``root/entries`` named like a key (committed or not)."""
    entries = root / "entries"
    try:
        prefixes = sorted(os.scandir(entries), key=lambda e: e.name)
    except FileNotFoundError:
        return
    for prefix in prefixes:
        if not prefix.is_dir(follow_symlinks=False):
            continue
        for item in sorted(os.scandir(prefix.path), key=lambda e: e.name):
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


def read_array_metadata(path: Path) -> tuple[str, tuple[int, ...], Mapping[str, Any]]:
    """Data type, shape and attributes from an array's ``zarr.json`` (for verification)."""
    try:
        meta = json.loads((path / ZARR_JSON).read_bytes())
        codecs = meta["codecs"]
        if meta["node_type"] != "array" or [c["name"] for c in codecs] != ["bytes"]:
            raise CorruptEntry(f"{path / ZARR_JSON}: not an uncompressed array")
        if codecs[0].get("configuration", {}).get("endian", sys.byteorder) != sys.byteorder:
            raise CorruptEntry(f"{path / ZARR_JSON}: byte order is not {sys.byteorder}")
        if list(meta["chunk_grid"]["configuration"]["chunk_shape"]) != [
            max(1, s) for s in meta["shape"]
        ]:
            raise CorruptEntry(f"{path / ZARR_JSON}: more than one chunk")
        return str(meta["data_type"]), tuple(meta["shape"]), meta.get("attributes", {})
    except CorruptEntry:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptEntry(f"{path / ZARR_JSON}: unreadable array metadata: {exc!r}") from exc
