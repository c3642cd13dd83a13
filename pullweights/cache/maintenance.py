"""Managing the cache in terms of models: list, remove, verify, prune, evict.

A model (:mod:`~pullweights.cache.models`) is removed whole — its weight entries, saved
sessions, remembered URL header and record — except what another model also uses (the
same bytes under two paths are stored once, and stay while either model does). Entries
no model claims (an interrupted pull, a graph built without a model record) are listed
as one ``(no model)`` row and evicted first, least recently used first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pullweights.cache import blobs, stamps
from pullweights.cache.confined import area, is_area_link
from pullweights.cache.entry import verify_entry
from pullweights.cache.eviction import scan
from pullweights.cache.index import iter_index
from pullweights.cache.layout import (
    CorruptEntry,
    entry_dir,
    iter_entry_dirs,
    iter_session_dirs,
    session_dir,
)
from pullweights.cache.models import ModelRecord, scan_models
from pullweights.cache.record import Record
from pullweights.cache.removal import clean_staging, empty_trash
from pullweights.cache.sizes import parse_size
from pullweights.descriptor import TensorDescriptor
from pullweights.errors import CacheError
from pullweights.sources.remote_record import RecordStore, verify_remembered

if TYPE_CHECKING:
    from pullweights.cache.store import WeightCache

__all__ = ["AREAS", "CacheProblem", "EntryInfo", "ModelInfo"]

#: Every directory directly under the cache root.
AREAS = (
    "entries",
    "sessions",
    "index",
    "models",
    "remote",
    "staging",
    "trash",
    stamps.AREA,
    blobs.AREA,
)
#: Name of the row of entries no model claims.
NO_MODEL = "(no model)"


@dataclass(frozen=True)
class EntryInfo:
    """One committed entry (weights or a saved session), as :meth:`WeightCache.entries`
    lists it."""

    key: str
    kind: str
    label: str
    #: Identity of the source the bytes were first stored from (path + size + mtime, ...).
    source: str
    source_name: str
    offset: int
    length: int
    #: ``"raw"``, ``"<transform name> v<version>"`` or ``"onnxruntime <version> session"``.
    transform: str
    #: Bytes of the entry's files.
    nbytes: int
    parts: Mapping[str, TensorDescriptor]
    created: float
    last_used: float
    path: Path

    @classmethod
    def from_record(cls, directory: Path, record: Record, used: float) -> EntryInfo:
        session = record.kind == "session"
        return cls(
            key=record.key,
            kind=record.kind,
            label=record.label,
            source=record.source,
            source_name=record.source_name,
            offset=record.offset,
            length=record.length,
            transform=f"{record.made_by} session" if session else record.made_by,
            nbytes=record.nbytes,
            parts={n: TensorDescriptor(p.dtype, p.shape) for n, p in record.parts.items()},
            created=record.created,
            last_used=used,
            path=directory,
        )


@dataclass(frozen=True)
class ModelInfo:
    """One model and the entries it uses, as :meth:`WeightCache.models` lists it."""

    #: The model key (empty for the ``(no model)`` row).
    key: str
    name: str
    source: str
    source_name: str
    url: str | None
    last_used: float
    #: Weight entries and saved sessions it uses that are in the cache.
    entries: tuple[EntryInfo, ...] = ()
    sessions: tuple[EntryInfo, ...] = ()
    #: Its record file (None for the ``(no model)`` row).
    path: Path | None = None

    @property
    def nbytes(self) -> int:
        """Bytes on disk of its entries and sessions (shared ones included)."""
        return sum(e.nbytes for e in self.entries + self.sessions)

    @property
    def keys(self) -> set[str]:
        return {e.key for e in self.entries + self.sessions}


@dataclass(frozen=True)
class CacheProblem:
    """Something :meth:`WeightCache.verify` found wrong, and whether it was removed."""

    key: str
    path: Path
    problem: str
    removed: bool

    def __str__(self) -> str:
        return f"{self.key}: {self.problem}" + (" (removed)" if self.removed else "")


# -- listing ---------------------------------------------------------------------------


def entries(cache: WeightCache) -> list[EntryInfo]:
    infos = [EntryInfo.from_record(d, r, used) for d, r, used in scan(cache.root)]
    return sorted(infos, key=lambda e: e.last_used, reverse=True)


def _records(cache: WeightCache) -> list[tuple[Path, ModelRecord, float]]:
    return [(p, r, u) for p, r, u in scan_models(cache.root) if isinstance(r, ModelRecord)]


def models(cache: WeightCache, listed: Iterable[EntryInfo] | None = None) -> list[ModelInfo]:
    infos = {e.key: e for e in (entries(cache) if listed is None else listed)}
    found: list[ModelInfo] = []
    claimed: set[str] = set()
    for path, record, used in _records(cache):
        weights = tuple(infos[k] for k in sorted(record.entries) if k in infos)
        sessions = tuple(infos[k] for k in sorted(record.sessions) if k in infos)
        claimed |= record.entries | record.sessions
        found.append(
            ModelInfo(
                record.key,
                record.name,
                record.source,
                record.source_name,
                record.url,
                used,
                tuple(e for e in weights if e.kind == "weights"),
                tuple(e for e in sessions if e.kind == "session"),
                path,
            )
        )
    found.sort(key=lambda m: m.last_used, reverse=True)
    orphans = sorted(
        (e for k, e in infos.items() if k not in claimed), key=lambda e: e.last_used, reverse=True
    )
    if orphans:
        found.append(_no_model(orphans))
    return found


def _no_model(unclaimed: Iterable[EntryInfo]) -> ModelInfo:
    """The ``(no model)`` row of entries no model claims."""
    listed = tuple(unclaimed)
    return ModelInfo(
        "",
        NO_MODEL,
        "",
        "",
        None,
        max(e.last_used for e in listed),
        tuple(e for e in listed if e.kind == "weights"),
        tuple(e for e in listed if e.kind == "session"),
    )


def find_model(cache: WeightCache, name: str, listed: list[ModelInfo]) -> ModelInfo:
    """The one model ``name`` means: its name, source name, URL, path or key (prefix).

    Raises:
        CacheError: none or several match.
    """
    real = os.path.realpath(name) if not name.startswith(("http://", "https://")) else ""

    def matches(m: ModelInfo) -> bool:
        if not m.key:
            return name == NO_MODEL
        if name in (m.name, m.source_name, m.url, m.key):
            return True
        if real and m.source.startswith(f"file:{real}:"):
            return True
        return len(name) >= 6 and m.key.startswith(name)

    hits = [m for m in listed if matches(m)]
    if len(hits) == 1:
        return hits[0]
    names = ", ".join(m.name for m in listed) or "none"
    if not hits:
        raise CacheError(f"no model {name!r} in the cache at {cache.root}; models: {names}")
    raise CacheError(
        f"{name!r} matches {len(hits)} models in the cache at {cache.root}: "
        + ", ".join(f"{m.name} ({m.key[:12]})" for m in hits)
    )


# -- removing --------------------------------------------------------------------------


def _remove_models(
    cache: WeightCache, victims: list[ModelInfo], rest: list[ModelInfo]
) -> list[ModelInfo]:
    """Remove ``victims`` whole, keeping what a model in ``rest`` also uses."""
    keep = set().union(*(m.keys for m in rest)) if rest else set()
    for model in victims:
        for info in model.entries + model.sessions:
            if info.key not in keep:
                cache._remove(info.key, info.path)
        if model.path is not None:
            cache._remove(model.key, model.path)
        if model.source and not any(m.source == model.source for m in rest):
            cache.headers.forget(model.source)  # its parsed GGUF header
        if model.url is not None and not any(m.url == model.url for m in rest):
            for path in remote_files(cache.root, model.url):
                if os.path.lexists(path):
                    cache._remove(path.name, path)
    return victims


def remote_files(root: Path, url: str) -> list[Path]:
    """The files remembering ``url`` in ``root/remote``: record (first), header, copy."""
    store = RecordStore(root / "remote")
    return [store.record_path(url), store.head_path(url), store.data_path(url)]


def remove_model(cache: WeightCache, name: str) -> ModelInfo:
    listed = models(cache)
    model = find_model(cache, name, listed)
    _remove_models(cache, [model], [m for m in listed if m is not model])
    return model


def _split_orphans(listed: list[ModelInfo]) -> tuple[list[ModelInfo], list[ModelInfo]]:
    """Models, and one pseudo-model per entry no model claims (evicted one by one)."""
    real = [m for m in listed if m.key]
    orphans = []
    for m in listed:
        if m.key:
            continue
        orphans += [_no_model([e]) for e in m.entries + m.sessions]
    return real, orphans


def _unique_bytes(models: Iterable[ModelInfo]) -> int:
    seen: dict[str, int] = {}
    for m in models:
        for e in m.entries + m.sessions:
            seen[e.key] = e.nbytes
    return sum(seen.values())


def _choose(
    candidates: list[ModelInfo],
    limit: int | None,
    cutoff: float | None,
    protected: set[str],
) -> list[ModelInfo]:
    """Victims among ``candidates`` (models and single unclaimed entries): those unused
    since ``cutoff``, then the least recently used (unclaimed entries first) until the
    rest fits in ``limit``; never one that uses a protected key."""
    order = sorted(candidates, key=lambda m: (bool(m.key), m.last_used))
    chosen: dict[int, ModelInfo] = {}
    if cutoff is not None:
        chosen = {id(m): m for m in order if m.last_used < cutoff and not m.keys & protected}
    if limit is not None:
        for m in order:
            if _unique_bytes(x for x in order if id(x) not in chosen) <= limit:
                break
            if not m.keys & protected:
                chosen[id(m)] = m
    return list(chosen.values())


def _merge_orphans(victims: list[ModelInfo]) -> list[ModelInfo]:
    """The victims as listed: unclaimed entries as one ``(no model)`` row, last."""
    merged = [m for m in victims if m.key]
    orphans = [e for m in victims if not m.key for e in m.entries + m.sessions]
    if orphans:
        merged.append(_no_model(orphans))
    return merged


def _evict(
    cache: WeightCache, choose: Callable[[list[ModelInfo]], list[ModelInfo]]
) -> list[ModelInfo]:
    real, orphans = _split_orphans(models(cache))
    candidates = real + orphans
    victims = choose(candidates)
    ids = {id(v) for v in victims}
    _remove_models(cache, victims, [m for m in candidates if id(m) not in ids])
    return _merge_orphans(victims)


def prune(
    cache: WeightCache,
    max_bytes: int | str | None,
    older_than: float | timedelta | None,
    all: bool,
) -> list[ModelInfo]:
    limit = cache.max_bytes if max_bytes is None else parse_size(max_bytes)
    clean_staging(cache.root)
    empty_trash(cache.root)
    if isinstance(older_than, timedelta):
        older_than = older_than.total_seconds()
    cutoff = None if older_than is None else time.time() - older_than
    with cache._lock:
        protected = set() if all else cache._in_use()

    def choose(candidates: list[ModelInfo]) -> list[ModelInfo]:
        return list(candidates) if all else _choose(candidates, limit, cutoff, protected)

    removed = _evict(cache, choose)
    _sweep_index(cache)
    return removed


def evict(cache: WeightCache, limit: int, protected: set[str]) -> None:
    """Evict whole models until the cache fits in ``limit`` (what a write over the
    cache's ``max_bytes`` calls)."""
    _evict(cache, lambda candidates: _choose(candidates, limit, None, protected))


def _sweep_index(cache: WeightCache) -> None:
    """Remove index files and verification stamps that name no entry (the entry was
    evicted or removed)."""
    live = {("weights", d.name) for d in iter_entry_dirs(cache.root)}
    live |= {("session", d.name) for d in iter_session_dirs(cache.root)}
    stamps.sweep(cache.root, live)
    for path, key in iter_index(cache.root):
        if key is None or not os.path.lexists(entry_dir(cache.root, key)):
            try:
                os.unlink(path)
            except IsADirectoryError:
                cache._remove(path.name, path)
            except OSError:
                pass


# -- verifying -------------------------------------------------------------------------


def _problem(cache: WeightCache, key: str, path: Path, problem: str, remove: bool) -> CacheProblem:
    if remove:
        cache._remove(key, path)
    return CacheProblem(key, path, problem, remove)


def _session_problem(cache: WeightCache, directory: Path, bad: set[str]) -> str | None:
    try:
        record = verify_entry(cache.root, directory, "session")
    except FileNotFoundError:
        return "saved session has no record (never committed)"
    except CorruptEntry as exc:
        return str(exc)
    except OSError as exc:
        return f"unreadable: {exc}"
    for key, fingerprint in record.built_from.items():
        if key in bad:
            return f"built from weight entry {key}, which is damaged"
        try:
            entry = verify_entry(cache.root, entry_dir(cache.root, key), "weights")
        except FileNotFoundError:
            continue  # evicted or dropped: the session holds a copy of those bytes
        except (CorruptEntry, OSError):
            return f"built from weight entry {key}, which is damaged"
        if entry.fingerprint != fingerprint:
            return f"built from weight entry {key}, which changed since"
    return None


def _weights_problem(cache: WeightCache, directory: Path) -> str | None:
    try:
        verify_entry(cache.root, directory, "weights")
    except FileNotFoundError:
        return "entry has no record (never committed)"
    except CorruptEntry as exc:
        return str(exc)
    except OSError as exc:
        return f"unreadable: {exc}"
    return None


def _verify_remote(cache: WeightCache, remove: bool) -> list[CacheProblem]:
    top = cache.root / "remote"
    if is_area_link(cache.root, "remote") or not top.is_dir():
        return []
    problems = []
    for path in sorted(top.glob("*.json")):
        if path.is_symlink():
            problem: str | None = "a symbolic link; the cache never follows one"
        else:
            problem = verify_remembered(path)
        if problem is None:
            continue
        if remove:
            for p in (path, path.with_suffix(".head"), path.with_suffix(".data")):
                if os.path.lexists(p):
                    cache._remove(p.name, p)
        problems.append(CacheProblem(path.stem, path, problem, remove))
    return problems


def _verify_areas(cache: WeightCache, remove: bool) -> list[CacheProblem]:
    problems = []
    for name in AREAS:
        if is_area_link(cache.root, name):
            path = cache.root / name
            if remove:
                area(cache.root, name)
            problems.append(
                CacheProblem(name, path, "a link or a file where a cache directory belongs", remove)
            )
    return problems


def verify(cache: WeightCache, key: str | None, *, remove: bool) -> list[CacheProblem]:
    root = cache.root
    if key is not None:
        return _verify_one(cache, key, remove)
    problems = _verify_areas(cache, remove)
    for path in clean_staging(root, remove=remove):
        name = path.name.split(".")[0]
        problems.append(CacheProblem(name, path, "partial write left by a stopped writer", remove))
    bad: set[str] = set()
    for directory in iter_entry_dirs(root):
        problem = _weights_problem(cache, directory)
        if problem is not None:
            bad.add(directory.name)
            problems.append(_problem(cache, directory.name, directory, problem, remove))
    for directory in iter_session_dirs(root):
        problem = _session_problem(cache, directory, bad)
        if problem is not None:
            problems.append(_problem(cache, directory.name, directory, problem, remove))
    for path, content in iter_index(root):
        if content is None:
            problems.append(_problem(cache, path.name, path, "unreadable index file", remove))
    for path, record, _used in scan_models(root):
        if isinstance(record, str):
            problems.append(_problem(cache, path.stem, path, record, remove))
    problems += _verify_remote(cache, remove)
    if remove:
        _sweep_index(cache)
    return problems


def _verify_one(cache: WeightCache, key: str, remove: bool) -> list[CacheProblem]:
    """Verify one weight entry, saved session or (by name or key) model."""
    root = cache.root
    if os.path.lexists(session_dir(root, key)) and _is_hex(key):
        targets = [("session", session_dir(root, key))]
    elif _is_hex(key) and os.path.lexists(entry_dir(root, key)):
        targets = [("weights", entry_dir(root, key))]
    else:
        try:
            model = find_model(cache, key, models(cache))
        except CacheError:
            raise CacheError(
                f"no entry or model {key!r} in the cache at {root} "
                "(see pullweights cache list [--tensors])"
            ) from None
        targets = [("weights", e.path) for e in model.entries]
        targets += [("session", s.path) for s in model.sessions]
    problems = []
    bad: set[str] = set()
    for kind, directory in sorted(targets, key=lambda t: t[0] != "weights"):
        if kind == "weights":
            problem = _weights_problem(cache, directory)
            if problem is not None:
                bad.add(directory.name)
        else:
            problem = _session_problem(cache, directory, bad)
        if problem is not None:
            problems.append(_problem(cache, directory.name, directory, problem, remove))
    return problems


def _is_hex(key: str) -> bool:
    return 8 <= len(key) <= 64 and all(c in "0123456789abcdef" for c in key)
