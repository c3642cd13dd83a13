"""The weight cache: payloads stored once, memory-mapped on every later load."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from pullweights.cache.entry import check_files, open_entry, verify_entry
from pullweights.cache.eviction import IndexItem, SizeIndex, lru_victims, scan
from pullweights.cache.layout import (
    ZARR_JSON,
    CorruptEntry,
    EntryRecord,
    check_key,
    entry_dir,
    iter_entry_dirs,
    read_record,
)
from pullweights.cache.removal import clean_staging, empty_trash, move_to_trash
from pullweights.cache.sessions import (
    RECORD,
    SessionRecord,
    SessionWriter,
    check_session,
    iter_session_dirs,
    read_session_record,
    scan_sessions,
    session_dir,
    session_problem,
)
from pullweights.cache.sizes import parse_size
from pullweights.cache.writer import EntryWriter
from pullweights.descriptor import TensorDescriptor
from pullweights.errors import CacheError
from pullweights.weights import Payload

__all__ = ["CacheProblem", "EntryInfo", "WeightCache", "default_cache_dir"]

log = logging.getLogger("pullweights.cache")


def default_cache_dir() -> Path:
    """The cache directory: ``$PULLWEIGHTS_CACHE``, else ``$XDG_CACHE_HOME/pullweights``,
    else ``~/.cache/pullweights``."""
    env = os.environ.get("PULLWEIGHTS_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "pullweights"


@dataclass(frozen=True)
class EntryInfo:
    """One committed cache entry, as :meth:`WeightCache.entries` lists it."""

    key: str
    label: str
    #: Identity of the source the bytes came from (path + size + mtime, URL + validator).
    source: str
    source_name: str
    offset: int
    length: int
    #: ``"raw"`` or ``"<transform name> v<version>"``.
    transform: str
    #: Bytes of array data.
    nbytes: int
    parts: Mapping[str, TensorDescriptor]
    created: float
    last_used: float
    path: Path

    @classmethod
    def from_record(cls, directory: Path, record: EntryRecord, used: float) -> EntryInfo:
        return cls(
            key=record.key,
            label=record.label,
            source=record.source,
            source_name=record.source_name,
            offset=record.offset,
            length=record.length,
            transform=record.transform,
            nbytes=record.nbytes,
            parts={n: TensorDescriptor(p.dtype, p.shape) for n, p in record.parts.items()},
            created=record.created,
            last_used=used,
            path=directory,
        )

    @classmethod
    def from_session(cls, directory: Path, record: SessionRecord, used: float) -> EntryInfo:
        return cls(
            key=record.key,
            label=record.label,
            source="",
            source_name="",
            offset=0,
            length=0,
            transform=f"{record.runtime} session",
            nbytes=record.nbytes,
            parts={},
            created=record.created,
            last_used=used,
            path=directory,
        )


@dataclass(frozen=True)
class CacheProblem:
    """Something :meth:`WeightCache.verify` found wrong, and whether it was removed."""

    key: str
    path: Path
    problem: str
    removed: bool

    def __str__(self) -> str:
        return f"{self.key}: {self.problem}" + (" (removed)" if self.removed else "")


class WeightCache:
    """An on-disk cache of payloads (raw or transformed weights) in a zarr v3 store.

    Each entry is a zarr group holding one uncompressed single-chunk array per part of the
    payload; reads map the chunk files read-only (zero-copy, no private memory), writes go
    through :class:`EntryWriter` and are crash-safe. See ``pullweights/cache/layout.py`` for
    the files. The cache also keeps saved sessions (``pullweights/cache/sessions.py``):
    listed, verified, counted and evicted like weight entries.

    Args:
        root: cache directory; default :func:`default_cache_dir`.
        max_bytes: evict least-recently-used entries after a write until the cache holds at
            most this many bytes of data (an int or a size such as ``"2G"``); None: no limit.
        durable: ``fsync`` files and directories before committing, so entries survive a
            power loss; False keeps crash safety against killed processes only.

    Example::

        cache = WeightCache(max_bytes="20G")
        arrays = cache.get(payload)
        if arrays is None:
            async with cache.writer(payload) as w:
                await payload.source.read_into(payload.offset, memoryview(w.array()).cast("B"))
            arrays = w.result
    """

    #: Seconds this process trusts its size accounting before a write rescans the cache
    #: (entries other processes wrote are counted after at most this long).
    index_ttl: float = 10.0

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        max_bytes: int | str | None = None,
        *,
        durable: bool = True,
    ) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        try:
            self.max_bytes = None if max_bytes is None else parse_size(max_bytes)
        except ValueError as exc:
            raise CacheError(f"cache at {self.root}: max_bytes: {exc}") from exc
        self.durable = durable
        self._lock = threading.Lock()
        self._index: SizeIndex | None = None
        #: Keys whose files this process uses, by weak references to what uses them.
        self._maps: dict[str, list[weakref.ref[Any]]] = {}
        self._cleaned = False

    def __repr__(self) -> str:
        return f"WeightCache({str(self.root)!r}, max_bytes={self.max_bytes})"

    # -- reading ----------------------------------------------------------------------

    def get(self, payload: Payload, *, verify: bool = False) -> dict[str, np.ndarray] | None:
        """Read-only memory-mapped arrays of every part of ``payload``, or None if not cached.

        An entry whose files are missing, truncated or (with ``verify``, which re-reads and
        checksums every byte) altered is removed and reported as absent, so the caller
        fetches the payload again. Marks the entry as used.

        The arrays stay valid after the entry is evicted or removed: the cache only renames
        and unlinks files, and a mapped file lives until it is unmapped. (A file truncated
        by something else while mapped would fault with ``SIGBUS`` on access.)

        Raises:
            CacheError: the entry exists but cannot be read (permissions, I/O error).
        """
        return self._open(payload.key, payload, verify)

    def contains(self, payload: Payload) -> bool:
        """True if a committed entry with whole files exists for ``payload`` (reads no data)."""
        directory = entry_dir(self.root, payload.key)
        try:
            record = read_record(directory)
            check_files(directory, record)
        except (OSError, CorruptEntry):
            return False
        return _matches(record, payload)

    def part_file(self, payload: Payload, part: str) -> Path | None:
        """The chunk file of ``part`` in ``payload``'s committed entry, or None if there is
        no such entry (reads no data; for hard links to a weight's bytes)."""
        directory = entry_dir(self.root, payload.key)
        try:
            record = read_record(directory)
        except (FileNotFoundError, CorruptEntry):
            return None
        stored = record.parts.get(part)
        if stored is None or stored.chunk is None or not _matches(record, payload):
            return None
        return directory / part / stored.chunk

    def _open(
        self, key: str, payload: Payload | None, verify: bool
    ) -> dict[str, np.ndarray] | None:
        directory = entry_dir(self.root, key)
        try:
            record = read_record(directory)
            if payload is not None and not _matches(record, payload):
                raise CorruptEntry(f"stored parts do not match {payload.describe()}")
            arrays, maps = open_entry(directory, record, verify)
        except FileNotFoundError:
            return None
        except CorruptEntry as exc:
            log.warning("cache entry %s is corrupt and is removed: %s", key, exc)
            self._remove(key, directory)
            return None
        except OSError as exc:
            raise CacheError(f"cache at {self.root}: cannot read entry {key}: {exc}") from exc
        now = time.time()
        # A read-only cache, or an entry evicted meanwhile: the maps stay valid.
        with contextlib.suppress(OSError):
            os.utime(directory / ZARR_JSON, (now, now))
        with self._lock:
            refs = [r for r in self._maps.get(key, []) if r() is not None]
            refs.extend(weakref.ref(mm) for mm in maps)
            self._maps[key] = refs
            if self._index is not None:
                self._index.touch(key, now)
        return arrays

    # -- writing ----------------------------------------------------------------------

    def _clean_staging_once(self) -> None:
        """Before this process first writes, remove what killed writers left staged."""
        if self._cleaned:
            return
        self._cleaned = True
        try:
            clean_staging(self.root)
        except OSError as exc:
            log.warning("cannot clean %s/staging: %s", self.root, exc)

    def writer(self, payload: Payload) -> EntryWriter:
        """A writer for ``payload``'s entry; see :class:`EntryWriter`."""
        self._clean_staging_once()
        return EntryWriter(self.root, payload, durable=self.durable, on_commit=self._committed)

    async def put(
        self, payload: Payload, arrays: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Store ``arrays`` (one per part, matching ``payload.outputs``) and return the maps."""
        async with self.writer(payload) as w:
            for name, data in arrays.items():
                w.write(name, data)
        assert w.result is not None
        return w.result

    def _committed(self, key: str) -> dict[str, np.ndarray]:
        """Called by a writer after its commit: open the entry, account for it, evict."""
        arrays = self._open(key, None, verify=False)
        if arrays is None:
            raise CacheError(f"cache at {self.root}: entry {key} vanished right after commit")
        self._admit(key, sum(a.nbytes for a in arrays.values()))
        return arrays

    def _admit(self, key: str, nbytes: int) -> None:
        """Account for a committed entry and evict least-recently-used ones over the limit."""
        with self._lock:
            if self.max_bytes is None:
                if self._index is not None:
                    self._index.add(key, nbytes, time.time())
                return
            index = self._loaded_index()
            if time.monotonic() - index.scanned_at > self.index_ttl:
                index.rebuild(self.root)  # count what other processes added meanwhile
            index.add(key, nbytes, time.time())
            if index.total > self.max_bytes:
                index.rebuild(self.root)
                protected = {key} | self._in_use()
                for victim in lru_victims(index.items, self.max_bytes, protected):
                    self._remove_locked(victim, self._directory(victim))

    # -- saved sessions ---------------------------------------------------------------

    def open_session(self, key: str) -> Path | None:
        """Directory of the whole, committed session entry ``key``, or None.

        Checks the record, every file's size and the small files' checksums; an entry that
        fails is removed and reported as absent. Marks the entry as used.
        """
        directory = session_dir(self.root, check_key(key))
        try:
            check_session(directory, read_session_record(directory))
        except FileNotFoundError:
            return None
        except CorruptEntry as exc:
            log.warning("saved session %s is corrupt and is removed: %s", key, exc)
            self._remove(key, directory)
            return None
        except OSError as exc:
            log.warning("saved session %s cannot be read: %s", key, exc)
            return None
        now = time.time()
        with contextlib.suppress(OSError):
            os.utime(directory / RECORD, (now, now))
        with self._lock:
            if self._index is not None:
                self._index.touch(key, now)
        return directory

    def session_writer(self, key: str) -> SessionWriter:
        """A writer that stages and publishes the session entry ``key`` crash-safely."""
        self._clean_staging_once()
        return SessionWriter(self.root, key, durable=self.durable, on_commit=self._admit)

    def mark_in_use(self, key: str, user: object) -> None:
        """Protect entry ``key`` from eviction by this process while ``user`` is alive."""
        with self._lock:
            self._maps.setdefault(key, []).append(weakref.ref(user))

    # -- management -------------------------------------------------------------------

    def entries(self) -> list[EntryInfo]:
        """Every committed entry (weights and saved sessions), most recently used first."""
        infos = [EntryInfo.from_record(d, r, used) for d, r, used in scan(self.root)]
        infos += [EntryInfo.from_session(d, r, used) for d, r, used in scan_sessions(self.root)]
        return sorted(infos, key=lambda e: e.last_used, reverse=True)

    def total_bytes(self) -> int:
        """Bytes of array data in the cache (a fresh scan)."""
        with self._lock:
            index = self._loaded_index()
            index.rebuild(self.root)
            return index.total

    def remove(self, key: str) -> bool:
        """Remove entry ``key`` (a cache key, see :attr:`Payload.key`, or a saved
        session's); False if absent."""
        check_key(key)
        return self._remove(key, self._directory(key))

    def verify(self, key: str | None = None, *, remove: bool = True) -> list[CacheProblem]:
        """Re-read every entry (or one) completely and report what is wrong.

        Checks the zarr metadata, file sizes and checksums, and finds staging files of
        writers that were killed. With ``remove`` broken entries and abandoned writes are
        deleted; otherwise they are only reported.
        """
        problems: list[CacheProblem] = []
        if key is None:
            for path in clean_staging(self.root, remove=remove):
                name = path.name.split(".")[0]
                problems.append(
                    CacheProblem(name, path, "partial write left by a stopped writer", remove)
                )
            directories = list(iter_entry_dirs(self.root))
            sessions = list(iter_session_dirs(self.root))
        else:
            directory = self._directory(check_key(key))
            is_session = directory.parent.name == "sessions"
            directories = [] if is_session else [directory]
            sessions = [directory] if is_session else []
        for directory in sessions:
            problem = session_problem(directory)
            if problem is not None:
                problems.append(self._problem(directory, problem, remove))
        for directory in directories:
            try:
                verify_entry(directory)
            except FileNotFoundError:
                if key is None:  # a directory without its record: never committed
                    problem = "entry has no record (never committed)"
                    problems.append(self._problem(directory, problem, remove))
            except CorruptEntry as exc:
                problems.append(self._problem(directory, str(exc), remove))
            except OSError as exc:
                problems.append(self._problem(directory, f"unreadable: {exc}", remove))
        return problems

    def _problem(self, directory: Path, problem: str, remove: bool) -> CacheProblem:
        if remove:
            self._remove(directory.name, directory)
        return CacheProblem(directory.name, directory, problem, remove)

    def prune(
        self,
        max_bytes: int | str | None = None,
        older_than: float | timedelta | None = None,
        all: bool = False,
    ) -> list[EntryInfo]:
        """Remove entries; return those removed.

        Args:
            max_bytes: remove least-recently-used entries until the cache holds at most
                this much data (default: the cache's own ``max_bytes``, if any).
            older_than: remove entries not used for this long (seconds or a timedelta).
            all: remove every entry.

        Entries with arrays still mapped by this process are kept unless ``all``. Staging
        files of stopped writers are always removed.
        """
        limit = self.max_bytes if max_bytes is None else parse_size(max_bytes)
        clean_staging(self.root)
        empty_trash(self.root)
        infos = {e.key: e for e in self.entries()}
        victims: list[str] = []
        with self._lock:
            protected = set() if all else self._in_use()
        if all:
            victims = list(infos)
        else:
            if older_than is not None:
                if isinstance(older_than, timedelta):
                    older_than = older_than.total_seconds()
                cutoff = time.time() - older_than
                victims = [
                    k for k, e in infos.items() if e.last_used < cutoff and k not in protected
                ]
            if limit is not None:
                rest = {k: e for k, e in infos.items() if k not in victims}
                victims += lru_victims({k: _item(e) for k, e in rest.items()}, limit, protected)
        removed = [infos[k] for k in victims if self._remove(k, infos[k].path)]
        return removed

    # -- internals --------------------------------------------------------------------

    def _loaded_index(self) -> SizeIndex:
        if self._index is None:
            self._index = SizeIndex()
            self._index.rebuild(self.root)
        return self._index

    def _directory(self, key: str) -> Path:
        """Directory of entry ``key``: a saved session's if one exists, else a weight's."""
        session = session_dir(self.root, key)
        return session if session.exists() else entry_dir(self.root, key)

    def _in_use(self) -> set[str]:
        """Keys whose arrays this process still holds (weak references to their maps)."""
        alive: set[str] = set()
        for key, refs in list(self._maps.items()):
            live = [r for r in refs if r() is not None]
            if live:
                self._maps[key] = live
                alive.add(key)
            else:
                del self._maps[key]
        return alive

    def _remove(self, key: str, directory: Path) -> bool:
        with self._lock:
            return self._remove_locked(key, directory)

    def _remove_locked(self, key: str, directory: Path) -> bool:
        try:
            moved = move_to_trash(self.root, directory)
            empty_trash(self.root)
        except OSError as exc:
            raise CacheError(f"cache at {self.root}: cannot remove entry {key}: {exc}") from exc
        if self._index is not None:
            self._index.discard(key)
        return moved


def _item(info: EntryInfo) -> IndexItem:
    return IndexItem(info.nbytes, info.last_used)


def _matches(record: EntryRecord, payload: Payload) -> bool:
    """True if the stored parts have the names, types and shapes the payload declares."""
    outputs = payload.outputs
    if set(record.parts) != set(outputs):
        return False
    return all(
        outputs[n].dtype == p.dtype and outputs[n].shape == p.shape for n, p in record.parts.items()
    )
