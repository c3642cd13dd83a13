"""Reading one committed entry: memory-mapped arrays, size checks and checksums.

Reads never go through zarr (it copies every chunk twice and would turn a missing chunk
into zeros): each part's chunk file is checked to have exactly the right size and mapped
read-only, so the array *is* the page cache. Checksums are CRC-32 (``zlib``, 4 GB/s here
against 0.85 GB/s for blake2b and 1.7 GB/s for sha256): they catch torn or flipped bytes,
not deliberate tampering.
"""

from __future__ import annotations

import mmap
import os
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pullweights.cache.layout import (
    CorruptEntry,
    EntryRecord,
    PartRecord,
    read_array_metadata,
    read_record,
)
from pullweights.dtypes import to_numpy

__all__ = ["RunningChecksum", "checksum", "check_files", "open_entry", "verify_entry"]

#: Bytes hashed per call: zlib releases the GIL for each block.
_HASH_BLOCK = 8 << 20


class RunningChecksum:
    """The checksum of bytes seen piece by piece, in order (same value as :func:`checksum`
    of their concatenation)."""

    __slots__ = ("_crc",)

    def __init__(self) -> None:
        self._crc = 0

    def update(self, data: mmap.mmap | np.ndarray | bytes) -> None:
        """Add the next bytes."""
        with memoryview(data) as view, view.cast("B") as flat:
            for start in range(0, len(flat), _HASH_BLOCK):
                self._crc = zlib.crc32(flat[start : start + _HASH_BLOCK], self._crc)

    @property
    def value(self) -> str:
        """The tagged checksum, e.g. ``crc32:1c291ca3``."""
        return f"crc32:{self._crc:08x}"


def checksum(data: mmap.mmap | np.ndarray | bytes) -> str:
    """Checksum of a buffer's bytes, tagged with its algorithm: ``crc32:1c291ca3``."""
    running = RunningChecksum()
    running.update(data)
    return running.value


def _chunk_path(directory: Path, part: PartRecord) -> Path | None:
    rel = part.chunk
    return None if rel is None else directory / part.name / rel


def _empty(part: PartRecord) -> np.ndarray:
    arr = np.empty(part.shape, to_numpy(part.dtype))
    arr.flags.writeable = False
    return arr


def _map_part(directory: Path, part: PartRecord) -> mmap.mmap:
    path = _chunk_path(directory, part)
    assert path is not None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise CorruptEntry(f"chunk file {path} is missing") from exc
    try:
        size = os.fstat(fd).st_size
        if size != part.nbytes:
            raise CorruptEntry(f"chunk file {path} has {size} bytes, expected {part.nbytes}")
        return mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)


def open_entry(
    directory: Path, record: EntryRecord, verify: bool = False
) -> tuple[dict[str, np.ndarray], list[mmap.mmap]]:
    """Read-only arrays of every part of a committed entry, and the maps behind them.

    Raises:
        CorruptEntry: a chunk file is missing, has the wrong size, or (with ``verify``)
            the wrong checksum.
    """
    arrays: dict[str, np.ndarray] = {}
    maps: list[mmap.mmap] = []
    for name, part in record.parts.items():
        if part.chunk is None:
            arrays[name] = _empty(part)
            continue
        mm = _map_part(directory, part)
        if verify and (actual := checksum(mm)) != part.checksum:
            mm.close()
            raise CorruptEntry(
                f"part {name} of entry {record.key} has checksum {actual}, expected {part.checksum}"
            )
        maps.append(mm)
        arrays[name] = np.frombuffer(mm, to_numpy(part.dtype)).reshape(part.shape)
    return arrays, maps


def check_files(directory: Path, record: EntryRecord) -> None:
    """Check that every chunk file exists with the right size (no reads, no maps).

    Raises:
        CorruptEntry: a chunk file is missing or has the wrong size.
    """
    for part in record.parts.values():
        path = _chunk_path(directory, part)
        if path is None:
            continue
        try:
            size = os.stat(path).st_size
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise CorruptEntry(f"chunk file {path} is missing") from exc
        if size != part.nbytes:
            raise CorruptEntry(f"chunk file {path} has {size} bytes, expected {part.nbytes}")


def verify_entry(directory: Path) -> EntryRecord:
    """Re-read an entry completely: record, zarr array metadata, sizes and checksums.

    Raises:
        FileNotFoundError: the directory has no committed entry (no group metadata).
        CorruptEntry: anything disagrees.
    """
    record = read_record(directory)
    for name, part in record.parts.items():
        dtype, shape, attributes = read_array_metadata(directory / name)
        if dtype != part.dtype or shape != part.shape:
            raise CorruptEntry(
                f"array {directory / name} is {dtype}{list(shape)} in zarr.json, "
                f"{part.dtype}{list(part.shape)} in the entry record"
            )
        stored = _attribute_checksum(attributes)
        if stored != part.checksum:
            raise CorruptEntry(f"array {directory / name}: checksum {stored} in zarr.json")
    for name, part in record.parts.items():
        if part.chunk is None:
            continue
        mm = _map_part(directory, part)
        try:
            actual = checksum(mm)
        finally:
            mm.close()
        if actual != part.checksum:
            raise CorruptEntry(
                f"part {name} of entry {record.key} has checksum {actual}, expected {part.checksum}"
            )
    return record


def _attribute_checksum(attributes: Mapping[str, object]) -> object:
    ours = attributes.get("pullweights")
    return ours.get("checksum") if isinstance(ours, dict) else None
