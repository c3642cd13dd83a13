"""The one record type of the cache: what a weight entry or a saved session holds.

Both kinds of entry are a directory of files plus a record written last (the commit
marker): the files' sizes and checksums, where the bytes came from, and, for a saved
session, the weight entries it was built from. A weight entry keeps its record in the
attributes of its zarr group (``zarr.json``), a saved session in ``session.json``; the
JSON is the same.

Nothing read back is trusted: a record that does not parse, names files outside its
entry, or whose files do not match it is a :class:`CorruptEntry`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pullweights.cache.checksum import seal, unseal
from pullweights.cache.layout import (
    ZARR_JSON,
    CorruptEntry,
    check_key,
    check_part_name,
    chunk_relpath,
    group_metadata,
)
from pullweights.dtypes import DataType, check_dtype, to_numpy
from pullweights.errors import CacheError

__all__ = [
    "RECORD_FORMAT",
    "SESSION_JSON",
    "Kind",
    "Part",
    "Record",
    "StoredFile",
    "record_file",
]

#: Version of the record; entries of another version are treated as absent.
RECORD_FORMAT = 2
#: The record file of a saved session.
SESSION_JSON = "session.json"

Kind = Literal["weights", "session"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def record_file(kind: Kind) -> str:
    """Name of the record file of an entry of ``kind``."""
    return ZARR_JSON if kind == "weights" else SESSION_JSON


def check_relpath(path: str) -> str:
    """Return ``path`` if it is a plain relative path inside an entry, else raise."""
    parts = path.split("/")
    if not parts or not all(_NAME_RE.match(p) for p in parts):
        raise CorruptEntry(f"file name {path!r} is not allowed in an entry")
    return path


@dataclass(frozen=True)
class StoredFile:
    """One file of an entry: its path relative to the entry, size and checksum."""

    path: str
    size: int
    checksum: str


@dataclass(frozen=True)
class Part:
    """One array of a weight entry; its bytes are the file :attr:`chunk` (None: empty)."""

    name: str
    dtype: DataType
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * to_numpy(self.dtype).itemsize

    @property
    def chunk(self) -> str | None:
        rel = chunk_relpath(self.shape)
        return None if rel is None else f"{self.name}/{rel}"


@dataclass(frozen=True)
class Record:
    """What an entry holds (see the module docs)."""

    kind: Kind
    key: str
    label: str
    created: float
    files: Mapping[str, StoredFile]
    #: What made the bytes: ``raw``, ``<transform> v<version>``, ``onnxruntime 1.31.1``.
    made_by: str
    #: Weights: every array, by part name.
    parts: Mapping[str, Part] = field(default_factory=dict)
    #: Weights: parameters of what made them (the transform's, or the raw descriptor).
    params: str = ""
    #: Weights: identity and name of the source first stored from, and the byte range.
    source: str = ""
    source_name: str = ""
    offset: int = 0
    length: int = 0
    #: Weights: ``sha256:<hex>`` of the raw bytes the entry was made from.
    content: str = ""
    #: Sessions: the weight entries built in, key -> :attr:`fingerprint` of each.
    built_from: Mapping[str, str] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Bytes of the entry's files (records and metadata not counted)."""
        return sum(f.size for f in self.files.values())

    @property
    def fingerprint(self) -> str:
        """One value that changes whenever any file's checksum does."""
        return ",".join(f"{p}={f.checksum}" for p, f in sorted(self.files.items()))

    def chunk(self, part: str) -> StoredFile | None:
        """The file holding the bytes of ``part`` (None for an empty array)."""
        rel = self.parts[part].chunk
        return None if rel is None else self.files[rel]

    # -- JSON -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "format": RECORD_FORMAT,
            "kind": self.kind,
            "key": self.key,
            "label": self.label,
            "created": self.created,
            "made_by": self.made_by,
            "files": {
                f.path: {"size": f.size, "checksum": f.checksum} for f in self.files.values()
            },
        }
        if self.kind == "weights":
            doc["parts"] = {
                p.name: {"dtype": p.dtype, "shape": list(p.shape)} for p in self.parts.values()
            }
            doc["origin"] = {
                "source": self.source,
                "source_name": self.source_name,
                "offset": self.offset,
                "length": self.length,
                "params": self.params,
                "content": self.content,
            }
        else:
            doc["built_from"] = dict(self.built_from)
        return seal(doc)

    def to_file(self) -> bytes:
        """The bytes of the record file (:func:`record_file`)."""
        if self.kind == "weights":
            return group_metadata({"pullweights": self.to_dict()})
        return json.dumps(self.to_dict(), indent=1).encode()

    @classmethod
    def from_dict(cls, doc: Any, kind: Kind) -> Record:
        """Parse a record of ``kind``; raise CorruptEntry if ``doc`` is not one."""
        try:
            if isinstance(doc, dict) and doc.get("format") != RECORD_FORMAT:
                raise CorruptEntry(f"record format {doc.get('format')!r}, expected {RECORD_FORMAT}")
            doc = unseal(doc)
            if doc["kind"] != kind:
                raise CorruptEntry(f"a {doc['kind']!r} record where a {kind} one belongs")
            files = {
                check_relpath(str(path)): StoredFile(str(path), int(f["size"]), str(f["checksum"]))
                for path, f in doc["files"].items()
            }
            common: dict[str, Any] = {
                "kind": kind,
                "key": check_key(str(doc["key"])),
                "label": str(doc["label"]),
                "created": float(doc["created"]),
                "made_by": str(doc["made_by"]),
                "files": files,
            }
            if kind == "session":
                built = {check_key(str(k)): str(v) for k, v in doc["built_from"].items()}
                return cls(**common, built_from=built)
            parts = {
                name: Part(check_part_name(name), check_dtype(p["dtype"]), _shape(p["shape"]))
                for name, p in doc["parts"].items()
            }
            origin = doc["origin"]
            record = cls(
                **common,
                parts=parts,
                params=str(origin["params"]),
                source=str(origin["source"]),
                source_name=str(origin["source_name"]),
                offset=int(origin["offset"]),
                length=int(origin["length"]),
                content=str(origin["content"]),
            )
        except CorruptEntry:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, CacheError) as exc:
            raise CorruptEntry(f"entry record is malformed: {exc!r}") from exc
        chunks = {p.chunk for p in parts.values()} - {None}
        if chunks != set(files):
            raise CorruptEntry(f"record lists files {sorted(files)} for parts {sorted(parts)}")
        for p in parts.values():
            if p.chunk is not None and files[p.chunk].size != p.nbytes:
                raise CorruptEntry(f"part {p.name}: file size disagrees with its shape")
        return record

    @classmethod
    def from_file(cls, data: bytes, kind: Kind, where: Path) -> Record:
        """Parse the bytes of a record file of ``kind`` read from ``where``."""
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise CorruptEntry(f"{where} is not JSON: {exc}") from exc
        if kind == "weights":
            if not isinstance(doc, dict) or doc.get("node_type") != "group":
                raise CorruptEntry(f"{where} is not a zarr group")
            attributes = doc.get("attributes")
            if not isinstance(attributes, dict) or "pullweights" not in attributes:
                raise CorruptEntry(f"{where} holds no entry record")
            doc = attributes["pullweights"]
        if not isinstance(doc, dict):
            raise CorruptEntry(f"{where} is not an entry record")
        return cls.from_dict(doc, kind)


def _shape(value: Any) -> tuple[int, ...]:
    shape = tuple(int(s) for s in value)
    if any(s < 0 for s in shape):
        raise ValueError(f"negative dimension in {shape}")
    return shape
