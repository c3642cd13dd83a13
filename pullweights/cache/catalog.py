"""What the cache holds, by model: registering what a load used, listing, removing,
verifying and pruning (:class:`~pullweights.cache.WeightCache`'s methods; the work is in
:mod:`.maintenance`)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, cast

from pullweights.cache import maintenance
from pullweights.cache.layout import CorruptEntry, check_key
from pullweights.cache.models import ModelRecord, model_path, new_record, read_model, write_model
from pullweights.weights import Payload, WeightRef

if TYPE_CHECKING:
    from pullweights.cache.store import WeightCache
    from pullweights.sources.base import ByteSource

__all__ = ["CacheCatalog"]

log = logging.getLogger("pullweights.cache")


class CacheCatalog:
    """The model-level methods of :class:`~pullweights.cache.WeightCache`."""

    @property
    def _cache(self) -> WeightCache:
        return cast("WeightCache", self)

    # -- models -----------------------------------------------------------------------

    def register_model(
        self,
        source: ByteSource,
        payloads: Iterable[Payload] = (),
        sessions: Iterable[str] = (),
        *,
        name: str | None = None,
    ) -> ModelRecord | None:
        """Record that the model read from ``source`` uses the cache entries of
        ``payloads`` and the saved sessions ``sessions`` (added to what it used before),
        and mark it used; ``name`` is what the user called it (default: the source's
        name). Never raises: a cache that cannot be written only logs it.

        Returns the model's record, or None if it could not be written.
        """
        entries = {k for p in payloads if (k := self._cache.content_key(p)) is not None}
        url = getattr(source, "url", None)
        record = new_record(
            source.identity,
            source.name,
            entries,
            sessions,
            name=name,
            url=url if isinstance(url, str) else None,
        )
        path = model_path(self._cache.root, record.key)
        with contextlib.suppress(OSError, CorruptEntry):
            record = read_model(self._cache.root, path).merged(record)
        if self._cache.read_only:
            return None
        try:
            write_model(self._cache.root, record)
        except OSError as exc:
            log.debug("cannot write the model record %s: %s", path, exc)
            return None
        return record

    def register_load(self, refs: Iterable[WeightRef], sessions: Iterable[str] = ()) -> None:
        """:meth:`register_model` for every source the weights ``refs`` come from (what a
        compile calls once its graph is ready); ``sessions`` go to each of them."""
        by_source: dict[str, tuple[ByteSource, list[Payload]]] = {}
        for ref in refs:
            source = ref.payload.source.model_source  # a slice of a file: that file's
            by_source.setdefault(source.identity, (source, []))[1].append(ref.payload)
        keys = list(sessions)
        for source, payloads in by_source.values():
            self._cache.register_model(source, payloads, keys)

    # -- management (see pullweights/cache/maintenance.py) ------------------------------

    def entries(self) -> list[maintenance.EntryInfo]:
        """Every committed entry (weights and saved sessions), most recently used first."""
        return maintenance.entries(self._cache)

    def models(self) -> list[maintenance.ModelInfo]:
        """Every model, most recently used first; entries no model claims come last, as
        one row named ``(no model)``."""
        return maintenance.models(self._cache)

    def total_bytes(self) -> int:
        """Bytes of entry data in the cache (a fresh scan)."""
        with self._cache._lock:
            index = self._cache._loaded_index()
            index.rebuild(self._cache.root)
            return index.total

    def remove(self, key: str) -> bool:
        """Remove entry ``key`` (a weight entry's content key or a saved session's key);
        False if absent."""
        check_key(key)
        return self._cache._remove(key, self._cache._directory(key))

    def remove_model(self, name: str) -> maintenance.ModelInfo:
        """Remove the model called ``name`` (its name, source or key) with its entries and
        sessions (those another model also uses are kept), its remembered URL header and
        its parsed GGUF header.

        Raises:
            CacheError: no model, or several, match ``name``.
        """
        return maintenance.remove_model(self._cache, name)

    def verify(
        self, key: str | None = None, *, remove: bool = True
    ) -> list[maintenance.CacheProblem]:
        """Re-read the whole cache (or one entry or model) and report what is wrong.

        Checks records, file sizes and checksums, sessions against the entries they were
        built from, the index, model records and remembered URL headers, and finds
        staging files of stopped writers and links where directories belong. With
        ``remove`` broken things are deleted; otherwise only reported.

        Raises:
            CacheError: ``key`` names no entry or model in the cache.
        """
        return maintenance.verify(self._cache, key, remove=remove)

    def prune(
        self,
        max_bytes: int | str | None = None,
        older_than: float | timedelta | None = None,
        all: bool = False,
    ) -> list[maintenance.ModelInfo]:
        """Remove whole models, least recently used first; return those removed.

        Args:
            max_bytes: remove until the cache holds at most this much (default: the
                cache's own ``max_bytes``, if any).
            older_than: remove models not used for this long (seconds or a timedelta).
            all: remove everything.

        Entries no model claims go first. Models with arrays still mapped by this process
        are kept unless ``all``. Staging files of stopped writers are always removed.
        """
        return maintenance.prune(self._cache, max_bytes, older_than, all)
