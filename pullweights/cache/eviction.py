"""Size accounting and least-recently-used eviction.

An entry's size is the bytes of its chunk files (metadata, a few KiB, is not counted). Its
last use is the modification time of its group ``zarr.json``, which every read touches
(one ``utime``, no rewrite), so recency is shared by every process using the cache. Saved
sessions (:mod:`~pullweights.cache.sessions`) count the same way: their files' bytes,
and the modification time of their ``session.json``.

A :class:`SizeIndex` is this process's view of the cache: built by one scan, kept current
with its own writes, reads and removals, and rebuilt by a fresh scan when it is older than
``WeightCache.index_ttl`` or a write seems to push the total over the limit, so entries
other processes added are counted before anything is evicted. Between scans a cache
shared by several writing processes can exceed its limit by what the others wrote.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from pullweights.cache.entry import read_record
from pullweights.cache.layout import CorruptEntry, iter_entry_dirs, iter_session_dirs
from pullweights.cache.record import Kind, Record, record_file

__all__ = ["IndexItem", "SizeIndex", "lru_victims", "scan"]


@dataclass
class IndexItem:
    """Size and last use of one committed entry."""

    nbytes: int
    last_used: float


def last_used(directory: Path, kind: Kind) -> float:
    """Last-use time of an entry (mtime of its record), in seconds since the epoch."""
    return os.lstat(directory / record_file(kind)).st_mtime_ns / 1e9


def scan(root: Path) -> Iterator[tuple[Path, Record, float]]:
    """Every committed, readable entry (weights, then saved sessions): its directory,
    record and last use."""
    areas: tuple[tuple[Kind, Iterator[Path]], ...] = (
        ("weights", iter_entry_dirs(root)),
        ("session", iter_session_dirs(root)),
    )
    for kind, directories in areas:
        for directory in directories:
            try:
                record = read_record(root, directory, kind)
                used = last_used(directory, kind)
            except (OSError, CorruptEntry):
                continue  # partial or broken: verify() reports it; no bytes we count
            yield directory, record, used


class SizeIndex:
    """Sizes and last uses of the entries this process knows about."""

    def __init__(self) -> None:
        self.items: dict[str, IndexItem] = {}
        self.total = 0
        #: ``time.monotonic()`` of the last scan.
        self.scanned_at = 0.0

    def rebuild(self, root: Path) -> None:
        """Replace the index by a fresh scan of ``root`` (weight and session entries)."""
        self.items = {r.key: IndexItem(r.nbytes, used) for _d, r, used in scan(root)}
        self.total = sum(item.nbytes for item in self.items.values())
        self.scanned_at = time.monotonic()

    def add(self, key: str, nbytes: int, used: float) -> None:
        self.discard(key)
        self.items[key] = IndexItem(nbytes, used)
        self.total += nbytes

    def touch(self, key: str, used: float) -> None:
        item = self.items.get(key)
        if item is not None:
            item.last_used = used

    def discard(self, key: str) -> None:
        item = self.items.pop(key, None)
        if item is not None:
            self.total -= item.nbytes


def lru_victims(
    items: Mapping[str, IndexItem], max_bytes: int, protected: Collection[str] = ()
) -> list[str]:
    """Keys to evict, least recently used first, until the rest fit in ``max_bytes``.

    Protected keys (the entry just written, entries with live arrays) are never chosen, so
    the result may leave the total above ``max_bytes``.
    """
    total = sum(item.nbytes for item in items.values())
    victims: list[str] = []
    for key, item in sorted(items.items(), key=lambda kv: (kv[1].last_used, kv[0])):
        if total <= max_bytes:
            break
        if key in protected:
            continue
        victims.append(key)
        total -= item.nbytes
    return victims
