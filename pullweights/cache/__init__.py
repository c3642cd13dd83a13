"""The on-disk weight cache: a zarr v3 store of uncompressed arrays, memory-mapped on read.

:class:`WeightCache` stores the arrays of a :class:`~pullweights.weights.Payload` (raw bytes
or a transform's outputs) under a key made from their content, verifies every file's
checksum before a runtime sees it, and keeps saved sessions and a record of which model
uses what; :class:`EntryWriter` writes one entry crash-safely. ``pullweights cache
list|rm|verify|prune|path`` manages it from the shell, in terms of models.
"""

from __future__ import annotations

from pullweights.cache.maintenance import CacheProblem, EntryInfo, ModelInfo
from pullweights.cache.sizes import format_size, parse_size
from pullweights.cache.store import WeightCache, default_cache_dir
from pullweights.cache.writer import EntryWriter

__all__ = [
    "CacheProblem",
    "EntryInfo",
    "EntryWriter",
    "ModelInfo",
    "WeightCache",
    "default_cache_dir",
    "format_size",
    "parse_size",
]
