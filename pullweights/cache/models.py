"""Models in the cache: which weight entries and saved sessions each model uses.

A *model* is one source of weights — a GGUF file, its part files, a URL — named by its
identity. Every load records what it used in ``models/<model key>.json`` (written to a
temporary name and renamed: a crash leaves the old record or the new one)::

    {"format": 1, "key": "...", "name": "gemma3-270m", "source": "<identity>",
     "source_name": "<path or URL>", "url": null, "created": 1764582000.0,
     "entries": ["<content key>", ...], "sessions": ["<session key>", ...]}

Its last use is the record's modification time, touched by every load. ``cache list``
shows one row per model, ``cache rm`` and ``prune`` remove whole models; an entry shared
by two models (the same bytes under two paths) goes with the last of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pullweights.cache.checksum import seal, unseal
from pullweights.cache.confined import area, list_area, read_inside, replace_file
from pullweights.cache.layout import CorruptEntry, check_key

__all__ = ["ModelRecord", "model_key", "model_path", "read_model", "scan_models", "write_model"]

_FORMAT = 1
_SUFFIX = ".json"


def model_key(identity: str) -> str:
    """The key of the model whose source has ``identity``."""
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def model_path(root: Path, key: str) -> Path:
    return root / "models" / f"{key}{_SUFFIX}"


@dataclass(frozen=True)
class ModelRecord:
    """What one model uses (see the module docs)."""

    key: str
    #: What the user called it (an installed name, a path, a URL).
    name: str
    #: Identity and readable name of its source.
    source: str
    source_name: str
    #: The URL of a remote model (its remembered header is part of the model).
    url: str | None
    created: float
    entries: frozenset[str]
    sessions: frozenset[str]

    def merged(self, other: ModelRecord) -> ModelRecord:
        """This record with ``other``'s entries and sessions added (the name: ``other``'s
        unless it is only the source's name and this one has a better one)."""
        name = other.name if other.name != other.source_name or not self.name else self.name
        return replace(
            self,
            name=name,
            entries=self.entries | other.entries,
            sessions=self.sessions | other.sessions,
        )

    def to_json(self) -> bytes:
        doc = {
            "format": _FORMAT,
            "key": self.key,
            "name": self.name,
            "source": self.source,
            "source_name": self.source_name,
            "url": self.url,
            "created": self.created,
            "entries": sorted(self.entries),
            "sessions": sorted(self.sessions),
        }
        return json.dumps(seal(doc), indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ModelRecord:
        """Parse a record; raise CorruptEntry if it is not one."""
        try:
            doc: Any = unseal(json.loads(data))
            if doc["format"] != _FORMAT:
                raise CorruptEntry(f"model record format {doc['format']!r}, expected {_FORMAT}")
            url = doc["url"]
            return cls(
                key=check_key(str(doc["key"])),
                name=str(doc["name"]),
                source=str(doc["source"]),
                source_name=str(doc["source_name"]),
                url=None if url is None else str(url),
                created=float(doc["created"]),
                entries=frozenset(check_key(str(k)) for k in doc["entries"]),
                sessions=frozenset(check_key(str(k)) for k in doc["sessions"]),
            )
        except CorruptEntry:
            raise
        except Exception as exc:  # JSON, keys, types: all mean "not a record"
            raise CorruptEntry(f"model record is malformed: {exc!r}") from exc


def new_record(
    identity: str,
    source_name: str,
    entries: Iterable[str],
    sessions: Iterable[str],
    *,
    name: str | None = None,
    url: str | None = None,
) -> ModelRecord:
    return ModelRecord(
        key=model_key(identity),
        name=name or source_name,
        source=identity,
        source_name=source_name,
        url=url,
        created=time.time(),
        entries=frozenset(entries),
        sessions=frozenset(sessions),
    )


def read_model(root: Path, path: Path) -> ModelRecord:
    """The model record in ``path``.

    Raises:
        FileNotFoundError: there is none. CorruptEntry: it is not a valid record.
    """
    try:
        data = read_inside(root, path, limit=64 << 20)
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(str(path)) from None
    except OSError as exc:
        raise CorruptEntry(f"{path}: {exc}") from exc
    record = ModelRecord.from_json(data)
    if path.name != f"{record.key}{_SUFFIX}":
        raise CorruptEntry(f"{path} holds the record of model {record.key}")
    return record


def write_model(root: Path, record: ModelRecord) -> None:
    """Write (or replace) a model record; the merge with an existing one is the caller's.

    Raises:
        OSError: the cache cannot be written.
    """
    directory = area(root, "models")
    replace_file(root, directory / f"{record.key}{_SUFFIX}", record.to_json())


def touch(path: Path) -> None:
    """Mark a model as used now."""
    now = time.time()
    os.utime(path, (now, now), follow_symlinks=False)


def scan_models(root: Path) -> Iterator[tuple[Path, ModelRecord | str, float]]:
    """Every model record: its path, the record (or what is wrong with it) and last use."""
    for item in list_area(root / "models"):
        if item.name.startswith(".") or not item.name.endswith(_SUFFIX):
            continue
        path = Path(item.path)
        try:
            record: ModelRecord | str = read_model(root, path)
            used = os.lstat(path).st_mtime_ns / 1e9
        except FileNotFoundError:
            continue
        except CorruptEntry as exc:
            record, used = str(exc), 0.0
        yield path, record, used
