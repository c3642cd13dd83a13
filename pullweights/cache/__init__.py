"""The on-disk weight cache: a zarr v3 store of uncompressed arrays, memory-mapped on read.

:class:`WeightCache` stores the arrays of a :class:`~pullweights.weights.Payload` (raw bytes
or a transform's outputs) under the payload's key; :class:`EntryWriter` writes one entry
crash-safely. ``pullweights cache list|verify|prune|path`` manages it from the shell.
"""

from __future__ import annotations

from pullweights.cache.sizes import format_size, parse_size
from pullweights.cache.store import CacheProblem, EntryInfo, WeightCache, default_cache_dir
from pullweights.cache.writer import EntryWriter

__all__ = [
    "CacheProblem",
    "EntryInfo",
    "EntryWriter",
    "WeightCache",
    "default_cache_dir",
    "format_size",
    "parse_size",
]
