"""The weight cache: payloads stored once by content, verified and memory-mapped on load."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pullweights.cache import maintenance
from pullweights.cache.catalog import CacheCatalog
from pullweights.cache.entry import check_files, open_entry, read_record
from pullweights.cache.eviction import SizeIndex
from pullweights.cache.index import HEAD, content_key, digest, head_key, lookup, remember
from pullweights.cache.layout import CorruptEntry, entry_dir, session_dir
from pullweights.cache.record import Record, record_file
from pullweights.cache.removal import clean_staging, empty_trash, move_to_trash
from pullweights.cache.session_entries import SessionEntries
from pullweights.cache.sizes import parse_size
from pullweights.cache.writer import READ_ONLY, EntryWriter
from pullweights.errors import CacheError
from pullweights.weights import Payload

if TYPE_CHECKING:
    pass

__all__ = ["EntryVanished", "WeightCache", "default_cache_dir"]

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


class EntryVanished(CacheError):
    """An entry was removed by another process between its commit and its first read
    (a concurrent load that saved the sessions holding it dropped it); pulling the
    payload again makes it anew."""


class WeightCache(CacheCatalog, SessionEntries):
    """An on-disk cache of payloads (raw or transformed weights) and saved sessions.

    Weight entries are zarr groups of uncompressed single-chunk arrays keyed by content
    (:mod:`~pullweights.cache.index`); reads map the chunk files read-only (zero-copy, no
    private memory) after checking their checksums; writes go through
    :class:`EntryWriter` and are crash-safe. Saved sessions (``sessions/``) are kept the
    same way; a model record (``models/``) says what each model uses. See
    ``pullweights/cache/layout.py`` for the files.

    A cache that cannot be written degrades to reading (writers keep weights in memory),
    and a damaged entry is never used: it is removed (or, read-only, skipped), with a
    warning, and the weight fetched from its source again.

    Args:
        root: cache directory; default :func:`default_cache_dir`.
        max_bytes: after a write, evict least-recently-used models until the cache holds
            at most this many bytes (an int or a size such as ``"2G"``); None: no limit.
        durable: ``fsync`` files and directories before committing, so entries survive a
            power loss; False keeps crash safety against killed processes only.

    Raises:
        CacheError: ``root`` exists and is not a directory, or ``max_bytes`` is invalid.

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
    #: Check every file's checksum before a runtime sees it (once while it is unchanged:
    #: :mod:`~pullweights.cache.stamps`).
    verify_on_load: bool = True

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        max_bytes: int | str | None = None,
        *,
        durable: bool = True,
    ) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise CacheError(f"cache directory {self.root} exists and is not a directory")
        try:
            self.max_bytes = None if max_bytes is None else parse_size(max_bytes)
        except ValueError as exc:
            raise CacheError(f"cache at {self.root}: max_bytes: {exc}") from exc
        self.durable = durable
        self._lock = threading.Lock()
        self._index: SizeIndex | None = None
        #: Keys whose files this process uses, by weak references to what uses them.
        self._maps: dict[str, list[weakref.ref[Any]]] = {}
        #: Source key -> content key, for payloads seen by this process.
        self._content: dict[str, str] = {}
        #: Damaged entries that could not be removed (a read-only cache): never used.
        self._bad: set[str] = set()
        self._cleaned = False
        #: True once a write failed because the cache cannot be written.
        self.read_only = False

    def __repr__(self) -> str:
        return f"WeightCache({str(self.root)!r}, max_bytes={self.max_bytes})"

    # -- content keys -----------------------------------------------------------------

    def content_key(self, payload: Payload, *, local: bool = False) -> str | None:
        """The content key of ``payload`` if this process or the index knows it; with
        ``local``, else computed by hashing its bytes if the source maps them (a local
        file). None: unknown (see :mod:`~pullweights.cache.index`)."""
        key = self._content.get(payload.key)
        if key is None:
            key = lookup(self.root, payload.key)
            if key is not None:
                self._content[payload.key] = key
            elif local:
                key = self._resolve(payload, None)
        return key

    def _resolve(self, payload: Payload, raw: np.ndarray | memoryview | None) -> str | None:
        """The content key, from the index, else by hashing ``raw`` or the mapped source
        bytes; None if the bytes are not at hand (a remote payload not fetched yet)."""
        key = self.content_key(payload)
        if key is not None:
            return key
        data = raw if raw is not None else payload.source.map(payload.offset, payload.length)
        if data is None:
            return None
        key = content_key(payload, digest(data))
        self._learn(payload.key, key)
        with memoryview(data) as view, view.cast("B") as flat:
            self._learn_head(payload, digest(flat[:HEAD]), key)
        return key

    def _learn_head(self, payload: Payload, head_digest: str, key: str) -> None:
        if not self.read_only:
            with contextlib.suppress(OSError):
                remember(self.root, head_key(payload, head_digest), key)

    def candidate(self, payload: Payload, head: np.ndarray | memoryview) -> str | None:
        """The content key of a cached entry ``payload`` may share, from its first raw
        bytes ``head`` (at least :data:`~pullweights.cache.index.HEAD` of them, or all):
        for a remote payload fetched in pieces, whose content is known only at the end.
        A hint: confirm it with :meth:`confirm` once every byte is hashed."""
        with memoryview(head) as view, view.cast("B") as flat:
            if len(flat) < min(HEAD, payload.length):
                return None
            key = lookup(self.root, head_key(payload, digest(flat[:HEAD])))
        if key is None or key in self._bad or not os.path.lexists(entry_dir(self.root, key)):
            return None
        return key

    def confirm(
        self, payload: Payload, raw_digest: str, candidate: str
    ) -> dict[str, np.ndarray] | None:
        """The entry ``candidate`` if ``payload``'s raw bytes (digest ``raw_digest``, see
        :class:`~pullweights.cache.index.RunningDigest`) are what it was made from."""
        if content_key(payload, raw_digest) != candidate:
            return None
        self._learn(payload.key, candidate)
        return self._open(candidate, payload)

    def _learn(self, source_key: str, key: str) -> None:
        self._content[source_key] = key
        if self.read_only:
            return
        try:
            remember(self.root, source_key, key)
        except OSError as exc:
            log.debug("cannot write the cache index: %s", exc)

    # -- reading ----------------------------------------------------------------------

    def get(
        self, payload: Payload, raw: np.ndarray | memoryview | None = None
    ) -> dict[str, np.ndarray] | None:
        """Read-only memory-mapped arrays of every part of ``payload``, or None if not cached.

        The entry is found by content: through the index, else by hashing ``raw`` (the
        payload's raw bytes, when the caller has fetched them) or the mapped source. Its
        files are checked (sizes, and checksums unless :attr:`verify_on_load` is off)
        before the arrays are returned; a damaged entry is removed (kept but never used
        in a read-only cache) with a warning and reported as absent, so the caller
        fetches the payload again. Marks the entry as used. Blocking: hashing and
        checking read bytes (call it from a worker thread).

        The arrays stay valid after the entry is evicted or removed: the cache only renames
        and unlinks files, and a mapped file lives until it is unmapped. (A file truncated
        by something else while mapped would fault with ``SIGBUS`` on access.)
        """
        key = self._resolve(payload, raw)
        return None if key is None else self._open(key, payload)

    def contains(self, payload: Payload) -> bool:
        """True if a committed entry with whole files is known for ``payload`` (reads no
        data, hashes nothing: a payload whose content is not indexed yet is absent)."""
        key = self.content_key(payload)
        if key is None or key in self._bad:
            return False
        directory = entry_dir(self.root, key)
        try:
            record = read_record(self.root, directory, "weights")
            check_files(self.root, directory, record)
        except (OSError, CorruptEntry):
            return False
        return _matches(record, payload)

    def part_file(self, payload: Payload, part: str) -> Path | None:
        """The chunk file of ``part`` in ``payload``'s committed entry, or None if there is
        no such entry (reads no data; for hard links to a weight's bytes)."""
        key = self.content_key(payload)
        if key is None:
            return None
        directory = entry_dir(self.root, key)
        try:
            record = read_record(self.root, directory, "weights")
        except (OSError, CorruptEntry):
            return None
        if part not in record.parts or not _matches(record, payload):
            return None
        stored = record.chunk(part)
        return None if stored is None else directory / stored.path

    def _open(self, key: str, payload: Payload | None) -> dict[str, np.ndarray] | None:
        if key in self._bad:
            return None
        directory = entry_dir(self.root, key)
        try:
            record = read_record(self.root, directory, "weights")
            if payload is not None and not _matches(record, payload):
                raise CorruptEntry(f"stored parts do not match {payload.describe()}")
            arrays, maps = open_entry(self.root, directory, record, verify=self.verify_on_load)
        except FileNotFoundError:
            return None
        except CorruptEntry as exc:
            self._damaged(key, directory, f"cache entry {key} is damaged: {exc}")
            return None
        except OSError as exc:
            log.warning("cache entry %s cannot be read (%s); it is fetched again", key, exc)
            self._bad.add(key)
            return None
        now = time.time()
        # A read-only cache, or an entry evicted meanwhile: the maps stay valid.
        with contextlib.suppress(OSError):
            os.utime(directory / record_file("weights"), (now, now), follow_symlinks=False)
        with self._lock:
            refs = [r for r in self._maps.get(key, []) if r() is not None]
            refs.extend(weakref.ref(mm) for mm in maps)
            self._maps[key] = refs
            if self._index is not None:
                self._index.touch(key, now)
        return arrays

    def _damaged(self, key: str, directory: Path, message: str) -> None:
        """Never use entry ``key`` again: remove it, or (read-only) remember it as bad."""
        self._bad.add(key)
        try:
            removed = self._remove(key, directory)
        except CacheError as exc:
            log.warning("%s; it cannot be removed (%s) and is not used", message, exc.__cause__)
            return
        if removed:
            self._bad.discard(key)
        log.warning("%s; it is removed and fetched again", message)

    # -- writing ----------------------------------------------------------------------

    def _clean_staging_once(self) -> None:
        """Before this process first writes, remove what killed writers left staged."""
        if self._cleaned:
            return
        self._cleaned = True
        try:
            clean_staging(self.root)
        except OSError as exc:
            if exc.errno in READ_ONLY:
                self._went_read_only(exc)
            else:
                log.warning("cannot clean %s/staging: %s", self.root, exc)

    def _went_read_only(self, exc: OSError) -> None:
        if not self.read_only:
            self.read_only = True
            log.warning(
                "cache at %s cannot be written (%s): running without storing weights in it",
                self.root,
                exc.strerror or exc,
            )

    def writer(self, payload: Payload, raw: np.ndarray | memoryview | None = None) -> EntryWriter:
        """A writer for ``payload``'s entry; see :class:`EntryWriter`.

        A transformed payload's content key must be known: from the index, ``raw`` (its
        raw bytes) or its mapped source; a raw payload's is computed from what is written.
        """
        self._clean_staging_once()
        key = self.content_key(payload)
        if key is None and (raw is not None or payload.transform is not None):
            key = self._resolve(payload, raw)
        return EntryWriter(
            self.root,
            payload,
            durable=self.durable,
            key=key,
            raw_digest=None,
            on_commit=self._committed,
            on_read_only=self._went_read_only,
            persist=not self.read_only,
        )

    async def put(
        self, payload: Payload, arrays: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Store ``arrays`` (one per part, matching ``payload.outputs``) and return the maps."""
        async with self.writer(payload) as w:
            for name, data in arrays.items():
                w.write(name, data)
        assert w.result is not None
        return w.result

    def _committed(self, writer: EntryWriter, record: Record, final: Path) -> dict[str, np.ndarray]:
        """Called by a writer after its commit: index, open, account for it, evict."""
        self._learn(writer.payload.key, record.key)
        if writer.head_digest is not None:
            self._learn_head(writer.payload, writer.head_digest, record.key)
        self._bad.discard(record.key)
        arrays = self._open(record.key, writer.payload)
        if arrays is None:
            raise EntryVanished(
                f"cache at {self.root}: entry {record.key} vanished right after commit"
            )
        self._admit(record.key, sum(a.nbytes for a in arrays.values()))
        return arrays

    def _admit(self, key: str, nbytes: int) -> None:
        """Account for a committed entry and evict least-recently-used models over the limit."""
        with self._lock:
            if self.max_bytes is None:
                if self._index is not None:
                    self._index.add(key, nbytes, time.time())
                return
            index = self._loaded_index()
            if time.monotonic() - index.scanned_at > self.index_ttl:
                index.rebuild(self.root)  # count what other processes added meanwhile
            index.add(key, nbytes, time.time())
            if index.total <= self.max_bytes:
                return
            index.rebuild(self.root)
            protected = {key} | self._in_use()
        maintenance.evict(self, self.max_bytes, protected)

    # -- saved sessions (the rest: cache/session_entries.py) ---------------------------

    @property
    def writable(self) -> bool:
        """False once the cache turned out not to be writable (nothing is stored then)."""
        return not self.read_only

    def mark_in_use(self, key: str, user: object) -> None:
        """Protect entry ``key`` from eviction by this process while ``user`` is alive."""
        with self._lock:
            self._maps.setdefault(key, []).append(weakref.ref(user))

    # -- internals --------------------------------------------------------------------

    def _loaded_index(self) -> SizeIndex:
        if self._index is None:
            self._index = SizeIndex()
            self._index.rebuild(self.root)
        return self._index

    def _directory(self, key: str) -> Path:
        """Directory of entry ``key``: a saved session's if one exists, else a weight's."""
        session = session_dir(self.root, key)
        return session if os.path.lexists(session) else entry_dir(self.root, key)

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


def _matches(record: Record, payload: Payload) -> bool:
    """True if the stored parts have the names, types and shapes the payload declares."""
    outputs = payload.outputs
    if set(record.parts) != set(outputs):
        return False
    return all(
        outputs[n].dtype == p.dtype and outputs[n].shape == p.shape for n, p in record.parts.items()
    )
