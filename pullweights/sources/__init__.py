"""Byte sources: where weight bytes come from (files, part files, memory, HTTP), and what
a model string names (:mod:`pullweights.sources.resolve`).

The HTTP sources import aiohttp (~0.4 s), so they load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pullweights.sources.base import ByteSource
from pullweights.sources.concat import ConcatSource
from pullweights.sources.file import FileSource
from pullweights.sources.http_settings import HttpSettings
from pullweights.sources.memory import MemorySource
from pullweights.sources.resolve import ModelSpec, ResolvedModel, open_location, resolve_model
from pullweights.sources.slice import SliceSource

if TYPE_CHECKING:
    from pullweights.sources.http import HttpSource
    from pullweights.sources.progress import ProgressEvent, ProgressMeter, TqdmProgress
    from pullweights.sources.remote import RemoteSource

__all__ = [
    "ByteSource",
    "ConcatSource",
    "FileSource",
    "HttpSettings",
    "HttpSource",
    "MemorySource",
    "ModelSpec",
    "ProgressEvent",
    "ProgressMeter",
    "RemoteSource",
    "ResolvedModel",
    "SliceSource",
    "TqdmProgress",
    "open_location",
    "resolve_model",
]

_LAZY = {
    "HttpSource": "pullweights.sources.http",
    "RemoteSource": "pullweights.sources.remote",
    "ProgressEvent": "pullweights.sources.progress",
    "ProgressMeter": "pullweights.sources.progress",
    "TqdmProgress": "pullweights.sources.progress",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
