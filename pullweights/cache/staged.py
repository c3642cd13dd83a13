"""The one staged-writer routine behind weight entries and saved sessions.

A writer goes ``new -> open -> committed | aborted``. :meth:`StagedWriter._open_staging`
makes a fresh, ``flock``-ed directory in ``staging/``; the subclass fills it; commit
seals it (checksums, flushes, the record written last), renames it into place in one
step and releases the lock. Anything else — an exception, a cancel, a killed process —
leaves nothing visible: the staging directory is discarded, or found by the next
:func:`~pullweights.cache.removal.clean_staging` once its lock is gone.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from pullweights.cache.confined import write_new_file
from pullweights.cache.entry import check_files, read_record
from pullweights.cache.layout import CorruptEntry
from pullweights.cache.record import Kind, Record, record_file
from pullweights.cache.removal import discard, fsync_path, make_staging, publish
from pullweights.errors import CacheError

__all__ = ["Cancelled", "StagedWriter"]


class Cancelled(Exception):
    """The writer was asked to stop before its commit published anything (internal)."""


class StagedWriter:
    """Stages one entry of ``kind`` and publishes it whole (see the module docs).

    Subclasses call :meth:`_open_staging`, write into :attr:`staging`, and commit with
    :meth:`_commit` given a function that seals the files and returns the record.
    """

    kind: Kind

    def __init__(self, root: Path, name: str, *, durable: bool) -> None:
        self.root = root
        #: Name of the staging directory (the entry key, if known when writing starts).
        self.name = name
        self.durable = durable
        self.state = "new"
        self.staging: Path | None = None
        #: Directories made inside the staging directory, flushed before the commit.
        self._dirs: list[Path] = []
        self._lock_fd = -1
        self._cancel = threading.Event()

    def describe(self) -> str:
        return f"{self.kind} writer {self.name}"

    # -- life cycle -------------------------------------------------------------------

    def _open_staging(self) -> Path:
        if self.state != "new":
            raise CacheError(f"{self.describe()} was already opened")
        self.state = "open"
        try:
            self.staging, self._lock_fd = make_staging(self.root, self.name)
        except RuntimeError as exc:
            raise CacheError(f"cache at {self.root}: cannot create a staging directory") from exc
        return self.staging

    def _check_open(self) -> None:
        if self.state != "open" or self.staging is None:
            raise CacheError(f"{self.describe()} is {self.state}")

    def _mkdir(self, path: Path) -> None:
        path.mkdir()
        self._dirs.append(path)

    def cancel(self) -> None:
        """Ask a commit running in another thread to stop before it publishes."""
        self._cancel.set()

    def _commit(self, seal: Callable[[], Record]) -> tuple[Path, Record]:
        """Seal (``seal`` checksums and flushes the files and returns the record), write
        the record last, publish; returns the entry's directory and record.

        If a whole entry of the same key is in place already, ours is discarded and that
        one is returned. Any failure discards the staging and re-raises.
        """
        self._check_open()
        try:
            record = seal()
            assert self.staging is not None
            write_new_file(
                self.staging / record_file(self.kind), record.to_file(), durable=self.durable
            )
            if self.durable:
                for d in reversed(self._dirs):
                    fsync_path(d)
                fsync_path(self.staging)
            if self._cancel.is_set():
                raise Cancelled
            final = self._final(record.key)
            if publish(self.root, self.staging, final, self._is_whole, self.durable):
                self.staging = None
            else:  # another writer's whole entry is in place
                self._discard()
        except BaseException:
            self.abort()
            raise
        self.state = "committed"
        self._release()
        return final, record

    def _final(self, key: str) -> Path:
        """The directory the entry ``key`` is published as (its parents made)."""
        raise NotImplementedError

    def _is_whole(self, directory: Path) -> bool:
        try:
            check_files(self.root, directory, read_record(self.root, directory, self.kind))
        except (OSError, CorruptEntry):
            return False
        return True

    def abort(self) -> None:
        """Discard everything written; nothing is published. Safe to call twice."""
        if self.state in ("aborted", "committed"):
            return
        self.state = "aborted"
        self._discard()
        self._release()

    def _discard(self) -> None:
        self._close()
        if self.staging is not None:
            discard(self.root, self.staging)
        self.staging = None

    def _release(self) -> None:
        self._close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _close(self) -> None:
        """Release the subclass's own files and maps (called before discarding)."""
