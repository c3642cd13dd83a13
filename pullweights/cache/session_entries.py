"""Saved-session entries, and the small stores loads read beside them (parsed headers,
session plans): :class:`~pullweights.cache.WeightCache`'s methods for
:mod:`pullweights.runtime.saved` and :mod:`pullweights.runtime.prefetch`."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from pullweights.cache.entry import check_files, read_record
from pullweights.cache.headers import HeaderStore
from pullweights.cache.layout import CorruptEntry, check_key, entry_dir, session_dir
from pullweights.cache.plans import SessionPlans
from pullweights.cache.record import record_file
from pullweights.cache.sessions import SessionWriter
from pullweights.weights import Payload

if TYPE_CHECKING:
    from pullweights.cache.store import WeightCache

__all__ = ["SessionEntries"]

log = logging.getLogger("pullweights.cache")


class SessionEntries:
    """The saved-session methods of :class:`~pullweights.cache.WeightCache`."""

    @property
    def _cache(self) -> WeightCache:
        return cast("WeightCache", self)

    def open_session(self, key: str) -> Path | None:
        """Directory of the whole, committed session entry ``key``, or None.

        Checks the record, every file's size and (unless :attr:`verify_on_load` is off)
        checksum, and every weight entry the session was built from: each must be whole,
        unchanged and pass its own checks. A session that fails is removed (and a damaged
        entry with it), with a warning, and reported as absent. Marks the entry as used.
        """
        cache = self._cache
        directory = session_dir(cache.root, check_key(key))
        if key in cache._bad:
            return None
        try:
            record = read_record(cache.root, directory, "session")
            check_files(cache.root, directory, record, checksums=cache.verify_on_load)
            for entry, fingerprint in record.built_from.items():
                self._check_built_from(entry, fingerprint)
        except FileNotFoundError:
            return None
        except CorruptEntry as exc:
            cache._damaged(key, directory, f"saved session {key} is damaged: {exc}")
            return None
        except OSError as exc:
            log.warning("saved session %s cannot be read: %s", key, exc)
            return None
        now = time.time()
        with contextlib.suppress(OSError):
            os.utime(directory / record_file("session"), (now, now), follow_symlinks=False)
        with cache._lock:
            if cache._index is not None:
                cache._index.touch(key, now)
        return directory

    def _check_built_from(self, key: str, fingerprint: str) -> None:
        """Raise CorruptEntry if weight entry ``key`` is there but damaged or changed (an
        entry that is gone is fine: a session holds a copy of the bytes it was built from,
        so it is never wrong because an entry was evicted or dropped after saving)."""
        cache = self._cache
        directory = entry_dir(cache.root, key)
        try:
            record = read_record(cache.root, directory, "weights")
        except FileNotFoundError:
            return  # evicted or dropped: the session holds its own copy of those bytes
        except CorruptEntry as exc:
            cache._damaged(key, directory, f"cache entry {key} is damaged: {exc}")
            raise CorruptEntry(f"weight entry {key} it was built from is damaged") from exc
        if record.fingerprint != fingerprint:
            raise CorruptEntry(f"weight entry {key} changed since it was built")
        try:
            check_files(cache.root, directory, record, checksums=cache.verify_on_load)
        except CorruptEntry as exc:
            cache._damaged(key, directory, f"cache entry {key} is damaged: {exc}")
            raise CorruptEntry(f"weight entry {key} it was built from is damaged") from exc

    @property
    def headers(self) -> HeaderStore:
        """Parsed GGUF headers by source identity (:mod:`~pullweights.cache.headers`):
        pass it to :func:`~pullweights.gguf.open_gguf` as ``headers=``."""
        return HeaderStore(self._cache.root)

    @property
    def session_plans(self) -> SessionPlans:
        """Which saved sessions each kind of load opened (:mod:`~pullweights.cache.plans`),
        for :mod:`pullweights.runtime.prefetch`."""
        return SessionPlans(self._cache.root)

    def session_writer(self, key: str) -> SessionWriter:
        """A writer that stages and publishes the session entry ``key`` crash-safely."""
        cache = self._cache
        cache._clean_staging_once()
        return SessionWriter(
            cache.root,
            key,
            durable=cache.durable,
            resolve=self._fingerprints,
            on_commit=cache._admit,
            on_read_only=cache._went_read_only,
        )

    def _fingerprints(self, payloads: Iterable[Payload]) -> dict[str, str]:
        """``{entry key: fingerprint}`` of the cached entries of ``payloads``."""
        cache = self._cache
        found: dict[str, str] = {}
        for payload in payloads:
            key = cache.content_key(payload)
            if key is None or key in found:
                continue
            with contextlib.suppress(OSError, CorruptEntry):
                found[key] = read_record(
                    cache.root, entry_dir(cache.root, key), "weights"
                ).fingerprint
        return found
