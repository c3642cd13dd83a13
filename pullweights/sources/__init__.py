"""Byte sources: where weight bytes come from (files, part files, memory, HTTP)."""

from pullweights.sources.base import ByteSource
from pullweights.sources.concat import ConcatSource
from pullweights.sources.file import FileSource
from pullweights.sources.http import HttpSource
from pullweights.sources.memory import MemorySource
from pullweights.sources.progress import ProgressEvent, ProgressMeter, TqdmProgress
from pullweights.sources.remote import RemoteSource

__all__ = [
    "ByteSource",
    "ConcatSource",
    "FileSource",
    "HttpSource",
    "MemorySource",
    "ProgressEvent",
    "ProgressMeter",
    "RemoteSource",
    "TqdmProgress",
]
