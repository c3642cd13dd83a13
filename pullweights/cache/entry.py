"""Reading committed entries: records, size and checksum checks, memory-mapped arrays.

Reads never go through zarr (it copies every chunk twice and would turn a missing chunk
into zeros): each file is opened without following links (:mod:`.confined`), checked to
have exactly its recorded size and, before a runtime sees it, its recorded checksum
(:mod:`.checksum`; an entry stamped as verified and unchanged since is not read again,
:mod:`.stamps`); a weight part is then mapped read-only, so the array *is* the page
cache. The same checks serve weight entries and saved sessions.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

from pullweights.cache import stamps
from pullweights.cache.checksum import verify_fd
from pullweights.cache.confined import Outside, open_inside, read_inside
from pullweights.cache.layout import ZARR_JSON, CorruptEntry, array_metadata
from pullweights.cache.record import Kind, Part, Record, StoredFile, record_file
from pullweights.dtypes import to_numpy

__all__ = ["check_files", "open_entry", "read_record", "verify_entry"]


def read_record(root: Path, directory: Path, kind: Kind) -> Record:
    """The record of the entry of ``kind`` in ``directory``.

    Raises:
        FileNotFoundError: there is no committed entry there.
        CorruptEntry: the record is malformed, names another key, or is behind a link.
    """
    path = directory / record_file(kind)
    try:
        data = read_inside(root, path)
    except NotADirectoryError as exc:
        raise FileNotFoundError(str(path)) from exc
    except Outside as exc:
        raise CorruptEntry(str(exc)) from exc
    record = Record.from_file(data, kind, path)
    if record.key != directory.name:
        raise CorruptEntry(f"record key {record.key} does not match directory {directory.name}")
    return record


def _open(root: Path, directory: Path, f: StoredFile) -> int:
    """A descriptor of one file of an entry, checked to have its recorded size."""
    path = directory / f.path
    try:
        fd = open_inside(root, path)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise CorruptEntry(f"file {path} is missing") from exc
    except Outside as exc:
        raise CorruptEntry(str(exc)) from exc
    try:
        size = os.fstat(fd).st_size
        if size != f.size:
            raise CorruptEntry(f"file {path} has {size} bytes, expected {f.size}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _verify(fd: int, path: Path, f: StoredFile) -> None:
    actual = verify_fd(fd, f.checksum)
    if actual is not None:
        raise CorruptEntry(f"file {path} has checksum {actual}, expected {f.checksum}")


def _verify_all(
    root: Path, directory: Path, record: Record, opened: list[tuple[StoredFile, int]], *, full: bool
) -> None:
    """Checksum every opened file of ``record`` — unless its stamp shows all of them
    verified before and unchanged since (:mod:`.stamps`; ``full`` ignores stamps) — and
    stamp them when they match.

    Raises:
        CorruptEntry: a file does not have its recorded checksum.
    """
    line, newest = stamps.identity((f.path, f.checksum, os.fstat(fd)) for f, fd in opened)
    if not full and stamps.stamped(root, record.kind, record.key, line):
        return
    for f, fd in opened:
        _verify(fd, directory / f.path, f)
    stamps.stamp(root, record.kind, record.key, line, newest)


def _open_all(root: Path, directory: Path, files: list[StoredFile]) -> list[tuple[StoredFile, int]]:
    """A descriptor of each of ``files`` (see :func:`_open`); the caller closes them."""
    opened: list[tuple[StoredFile, int]] = []
    try:
        for f in files:
            opened.append((f, _open(root, directory, f)))
    except BaseException:
        _close_all(opened)
        raise
    return opened


def _close_all(opened: list[tuple[StoredFile, int]]) -> None:
    for _f, fd in opened:
        os.close(fd)


def check_files(
    root: Path, directory: Path, record: Record, *, checksums: bool = False, full: bool = False
) -> None:
    """Check that every file of ``record`` exists with its size (and, with ``checksums``,
    its checksum: read unless stamped, or always with ``full``); a saved session's
    directory must hold nothing else.

    Raises:
        CorruptEntry: a file is missing, a link, of the wrong size or checksum, or extra.
    """
    opened = _open_all(root, directory, list(record.files.values()))
    try:
        if checksums:
            _verify_all(root, directory, record, opened, full=full)
    finally:
        _close_all(opened)
    if record.kind == "session":
        extra = sorted(set(os.listdir(directory)) - set(record.files) - {record_file("session")})
        if extra:
            raise CorruptEntry(f"session entry {directory} holds unlisted files {extra}")


def _empty(part: Part) -> np.ndarray:
    arr = np.empty(part.shape, to_numpy(part.dtype))
    arr.flags.writeable = False
    return arr


def open_entry(
    root: Path, directory: Path, record: Record, *, verify: bool = True
) -> tuple[dict[str, np.ndarray], list[mmap.mmap]]:
    """Read-only arrays of every part of a weight entry, and the maps behind them.

    With ``verify`` every file's checksum is checked first (unless its stamp shows it
    verified and unchanged: :mod:`.stamps`).

    Raises:
        CorruptEntry: a file is missing, a link, or of the wrong size or checksum.
    """
    arrays: dict[str, np.ndarray] = {}
    maps: list[mmap.mmap] = []
    chunks = {name: record.chunk(name) for name in record.parts}
    opened = _open_all(root, directory, [f for f in chunks.values() if f is not None])
    try:
        if verify:
            _verify_all(root, directory, record, opened, full=False)
        fds = {f.path: fd for f, fd in opened}
        for name, part in record.parts.items():
            f = chunks[name]
            if f is None:
                arrays[name] = _empty(part)
                continue
            mm = mmap.mmap(fds[f.path], f.size, access=mmap.ACCESS_READ)
            maps.append(mm)
            arrays[name] = np.frombuffer(mm, to_numpy(part.dtype)).reshape(part.shape)
    except BaseException:
        arrays.clear()
        for mm in maps:
            mm.close()
        raise
    finally:
        _close_all(opened)
    return arrays, maps


def verify_entry(root: Path, directory: Path, kind: Kind) -> Record:
    """Re-read an entry completely: record, (zarr array metadata,) sizes and checksums.

    Raises:
        FileNotFoundError: the directory has no committed entry (no record).
        CorruptEntry: anything disagrees.
    """
    record = read_record(root, directory, kind)
    for name, part in record.parts.items():
        # The array metadata is made from the record: it must be exactly what was written.
        path = directory / name / ZARR_JSON
        try:
            data = read_inside(root, path)
        except OSError as exc:
            raise CorruptEntry(f"{path}: {exc}") from exc
        if data != array_metadata(part.dtype, part.shape, array_attributes(record.chunk(name))):
            raise CorruptEntry(f"{path} does not describe part {name} of the entry record")
    check_files(root, directory, record, checksums=True, full=True)
    return record


def array_attributes(chunk: StoredFile | None) -> dict[str, object]:
    """The attributes of a part's zarr array: the chunk's checksum, for zarr readers."""
    return {} if chunk is None else {"pullweights": {"checksum": chunk.checksum}}
