"""Saved sessions in the cache: files a runtime wrote once and maps on every later load.

::

    <root>/sessions/<key>/session.json   the record: files, sizes, checksums; written last
    <root>/sessions/<key>/<file>...      the saved files (an optimized model, its data)
    <root>/staging/<key>.<pid>.<token>/  a session entry being written (not yet visible)

The cache does not know what the files mean (:mod:`pullweights.runtime.saved` does);
it keeps them whole: a :class:`SessionWriter` hands out a locked staging directory, and
``commit`` checksums and flushes every file, writes the record last and renames the
directory into ``sessions/`` — the same crash-safe protocol as weight entries, sharing
their staging, trash and ``flock`` rules. Reads check the record, every file's size and
the checksums of the small files (the model itself) before a runtime sees them.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pullweights.cache.entry import checksum
from pullweights.cache.layout import CorruptEntry, check_key
from pullweights.cache.removal import (
    discard,
    fsync_path,
    make_staging,
    publish,
)

__all__ = [
    "RECORD",
    "SessionFile",
    "SessionRecord",
    "SessionWriter",
    "check_session",
    "iter_session_dirs",
    "read_session_record",
    "scan_sessions",
    "session_dir",
    "session_problem",
]

#: Version of the session record; entries of another version are treated as corrupt.
SESSION_FORMAT = 1
#: Name of the record file (the commit marker) in a session directory.
RECORD = "session.json"
#: Files up to this size are checksummed on every read (the model; not its data).
CHECK_ON_READ = 16 << 20

_KEY_RE = re.compile(r"^[0-9a-f]{8,64}$")
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class SessionFile:
    """One saved file: its size and checksum."""

    name: str
    size: int
    checksum: str


@dataclass(frozen=True)
class SessionRecord:
    """What a session entry holds (its ``session.json``)."""

    key: str
    label: str
    #: The runtime that wrote the files, e.g. ``onnxruntime 1.31.1``.
    runtime: str
    created: float
    files: Mapping[str, SessionFile]

    @property
    def nbytes(self) -> int:
        """Bytes of the saved files."""
        return sum(f.size for f in self.files.values())

    def to_json(self) -> bytes:
        doc = {
            "format": SESSION_FORMAT,
            "key": self.key,
            "label": self.label,
            "runtime": self.runtime,
            "created": self.created,
            "files": {
                f.name: {"size": f.size, "checksum": f.checksum} for f in self.files.values()
            },
        }
        return json.dumps(doc, indent=1).encode()

    @classmethod
    def from_json(cls, text: bytes) -> SessionRecord:
        """Parse a record; raise CorruptEntry if it is not one."""
        try:
            doc: Any = json.loads(text)
            if doc["format"] != SESSION_FORMAT:
                raise CorruptEntry(f"session format {doc['format']!r}, expected {SESSION_FORMAT}")
            files = {}
            for name, f in doc["files"].items():
                if not _FILE_RE.match(name) or name == RECORD:
                    raise CorruptEntry(f"session file name {name!r} is not allowed")
                files[name] = SessionFile(name, int(f["size"]), str(f["checksum"]))
            return cls(
                key=check_key(doc["key"]),
                label=str(doc["label"]),
                runtime=str(doc["runtime"]),
                created=float(doc["created"]),
                files=files,
            )
        except CorruptEntry:
            raise
        except Exception as exc:  # JSON, keys, types: all mean "not a record"
            raise CorruptEntry(f"session record is malformed: {exc!r}") from exc


def session_dir(root: Path, key: str) -> Path:
    """Directory of the committed session entry ``key`` under the cache ``root``."""
    return root / "sessions" / key


def iter_session_dirs(root: Path) -> Iterator[Path]:
    """Every directory under ``root/sessions`` named like a key (committed or not)."""
    try:
        items = sorted(os.scandir(root / "sessions"), key=lambda e: e.name)
    except FileNotFoundError:
        return
    for item in items:
        if item.is_dir(follow_symlinks=False) and _KEY_RE.match(item.name):
            yield Path(item.path)


def read_session_record(directory: Path) -> SessionRecord:
    """The record of the session entry in ``directory``.

    Raises:
        FileNotFoundError: there is no committed entry there.
        CorruptEntry: the record is malformed or names another key.
    """
    try:
        text = (directory / RECORD).read_bytes()
    except NotADirectoryError as exc:
        raise FileNotFoundError(str(directory)) from exc
    record = SessionRecord.from_json(text)
    if record.key != directory.name:
        raise CorruptEntry(f"record key {record.key} does not match directory {directory.name}")
    return record


def _checksum_file(path: Path) -> str:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return checksum(b"")
        with mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as mm:
            return checksum(mm)


def check_session(directory: Path, record: SessionRecord, *, full: bool = False) -> None:
    """Check every file's size, and the checksum of small files (of all with ``full``).

    Raises:
        CorruptEntry: a file is missing, has the wrong size or checksum, or is not listed.
    """
    for f in record.files.values():
        path = directory / f.name
        try:
            size = os.stat(path).st_size
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise CorruptEntry(f"session file {path} is missing") from exc
        if size != f.size:
            raise CorruptEntry(f"session file {path} has {size} bytes, expected {f.size}")
        if full or size <= CHECK_ON_READ:
            actual = _checksum_file(path)
            if actual != f.checksum:
                raise CorruptEntry(
                    f"session file {path} has checksum {actual}, expected {f.checksum}"
                )
    extra = sorted(set(os.listdir(directory)) - set(record.files) - {RECORD})
    if extra:
        raise CorruptEntry(f"session entry {directory} holds unlisted files {extra}")


def session_problem(directory: Path) -> str | None:
    """What is wrong with the session entry in ``directory`` (every file checksummed), or
    None if nothing is."""
    try:
        check_session(directory, read_session_record(directory), full=True)
    except FileNotFoundError:
        return "saved session has no record (never committed)"
    except CorruptEntry as exc:
        return str(exc)
    except OSError as exc:
        return f"unreadable: {exc}"
    return None


class SessionWriter:
    """Stages one session entry: the caller writes files into :attr:`directory`, then
    :meth:`commit` publishes them whole, or :meth:`abort` discards them.

    Obtain it from :meth:`WeightCache.session_writer`. Every regular file in the staging
    directory at commit time becomes part of the entry; subdirectories are not allowed.
    Thread-safe in the sense that ``commit`` may run in a worker thread.
    """

    def __init__(
        self,
        root: Path,
        key: str,
        *,
        durable: bool,
        on_commit: Callable[[str, int], None] | None = None,
    ) -> None:
        self.root = root
        self.key = check_key(key)
        self._durable = durable
        self._on_commit = on_commit
        self._lock_fd = -1
        self.directory: Path | None = None
        self.state = "new"

    def open(self) -> Path:
        """Create and lock the staging directory; returns it.

        Raises:
            OSError: the cache directory is not writable.
        """
        if self.state != "new":
            raise RuntimeError(f"session writer {self.key} is {self.state}")
        try:
            self.directory, self._lock_fd = make_staging(self.root, self.key)
        except RuntimeError as exc:
            raise OSError(errno.EAGAIN, str(exc)) from exc
        self.state = "open"
        return self.directory

    def commit(self, label: str, runtime: str) -> Path:
        """Checksum and flush every file, write the record, publish; returns the entry.

        If a whole entry of the same key appeared meanwhile, ours is discarded and that
        one returned.

        Raises:
            OSError: writing, flushing or renaming failed (the staging is discarded).
        """
        if self.state != "open" or self.directory is None:
            raise RuntimeError(f"session writer {self.key} is {self.state}")
        try:
            files = self._seal(label, runtime)
            final = self._publish()
        except BaseException:
            self.abort()
            raise
        self.state = "committed"
        self._release()
        if self._on_commit is not None:
            self._on_commit(self.key, sum(f.size for f in files.values()))
        return final

    def _seal(self, label: str, runtime: str) -> dict[str, SessionFile]:
        assert self.directory is not None
        files: dict[str, SessionFile] = {}
        for item in sorted(os.scandir(self.directory), key=lambda e: e.name):
            if not item.is_file(follow_symlinks=False) or not _FILE_RE.match(item.name):
                raise OSError(errno.EINVAL, f"unexpected item {item.path} in a session entry")
            path = Path(item.path)
            if self._durable:
                fsync_path(path)
            files[item.name] = SessionFile(item.name, os.stat(path).st_size, _checksum_file(path))
        record = SessionRecord(self.key, label, runtime, time.time(), files)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        fd = os.open(self.directory / RECORD, flags, 0o644)
        try:
            view = memoryview(record.to_json())
            while view:
                view = view[os.write(fd, view) :]
            if self._durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if self._durable:
            fsync_path(self.directory)
        return files

    def _publish(self) -> Path:
        assert self.directory is not None
        final = session_dir(self.root, self.key)
        final.parent.mkdir(parents=True, exist_ok=True)

        def is_whole(directory: Path) -> bool:
            try:
                check_session(directory, read_session_record(directory))
            except (FileNotFoundError, CorruptEntry):
                return False
            return True

        if publish(self.root, self.directory, final, is_whole, self._durable):
            self.directory = None
        else:  # another writer's whole entry is in place
            self._discard()
        return final

    def abort(self) -> None:
        """Discard the staging directory; nothing is published. Safe to call twice."""
        if self.state in ("aborted", "committed"):
            return
        self.state = "aborted"
        self._discard()
        self._release()

    def _discard(self) -> None:
        if self.directory is not None:
            discard(self.root, self.directory)
        self.directory = None

    def _release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def scan_sessions(root: Path) -> Iterator[tuple[Path, SessionRecord, float]]:
    """Every committed, readable session entry: its directory, record and last use."""
    for directory in iter_session_dirs(root):
        try:
            record = read_session_record(directory)
            used = os.stat(directory / RECORD).st_mtime_ns / 1e9
        except (FileNotFoundError, CorruptEntry):
            continue
        yield directory, record, used
