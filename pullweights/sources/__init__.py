"""Byte sources: where weight bytes come from."""

from pullweights.sources.base import ByteSource
from pullweights.sources.concat import ConcatSource
from pullweights.sources.file import FileSource
from pullweights.sources.memory import MemorySource

__all__ = ["ByteSource", "ConcatSource", "FileSource", "MemorySource"]
