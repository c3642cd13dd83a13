"""Saved sessions in the cache: files a runtime wrote once and maps on every later load.

::

    <root>/sessions/<key>/session.json   the record (:mod:`~pullweights.cache.record`)
    <root>/sessions/<key>/<file>...      the saved files (an optimized model, its data)
    <root>/staging/<key>.<pid>.<token>/  a session entry being written (not yet visible)

The cache does not know what the files mean (:mod:`pullweights.runtime.saved` does);
it keeps them whole: a :class:`SessionWriter` hands out a locked staging directory, and
``commit`` checksums and flushes every file, writes the record last and renames the
directory into ``sessions/`` — the one staged-writer routine of weight entries
(:mod:`~pullweights.cache.staged`). The record lists the weight entries the session was
built from (their keys and checksums): a session is not opened while one of them is
damaged or changed, so a damaged entry never survives baked into a session (one that
was evicted or dropped is fine: the session holds a copy of its bytes).
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from pullweights.cache.checksum import checksum_fd, remember
from pullweights.cache.confined import area
from pullweights.cache.layout import check_key, session_dir
from pullweights.cache.record import Record, StoredFile, check_relpath
from pullweights.cache.staged import StagedWriter
from pullweights.cache.writer import READ_ONLY
from pullweights.errors import CacheError
from pullweights.weights import Payload

__all__ = ["SessionWriter"]

#: Resolves the payloads a session is built from to ``{entry key: fingerprint}``.
Resolver = Callable[[Iterable[Payload]], Mapping[str, str]]


class SessionWriter(StagedWriter):
    """Stages one session entry: the caller writes files into :attr:`directory`, then
    :meth:`commit` publishes them whole, or :meth:`abort` discards them.

    Obtain it from :meth:`WeightCache.session_writer`. Every regular file in the staging
    directory at commit time becomes part of the entry; subdirectories are not allowed.
    ``commit`` may run in a worker thread.
    """

    kind = "session"

    def __init__(
        self,
        root: Path,
        key: str,
        *,
        durable: bool,
        resolve: Resolver | None = None,
        on_commit: Callable[[str, int], None] | None = None,
        on_read_only: Callable[[OSError], None] | None = None,
    ) -> None:
        super().__init__(root, check_key(key), durable=durable)
        self.key = key
        self._resolve = resolve
        self._on_commit = on_commit
        self._on_read_only = on_read_only
        self._built_from: dict[str, str] = {}

    @property
    def directory(self) -> Path | None:
        """The staging directory while open."""
        return self.staging

    def open(self) -> Path:
        """Create and lock the staging directory; returns it.

        Raises:
            OSError: the cache directory is not writable.
        """
        try:
            return self._open_staging()
        except CacheError as exc:
            raise OSError(errno.EAGAIN, str(exc)) from exc
        except OSError as exc:
            if exc.errno in READ_ONLY and self._on_read_only is not None:
                self._on_read_only(exc)
            raise

    def built_from(self, payloads: Iterable[Payload]) -> None:
        """Record the weights the session is built from (their cache entries: a session
        is opened again only while each of them is whole and unchanged)."""
        if self._resolve is not None:
            self._built_from.update(self._resolve(payloads))

    def commit(self, label: str, runtime: str) -> Path:
        """Checksum and flush every file, write the record, publish; returns the entry.

        If a whole entry of the same key appeared meanwhile, ours is discarded and that
        one returned.

        Raises:
            OSError: writing, flushing or renaming failed (the staging is discarded).
            CacheError: the writer is not open.
        """

        def seal() -> Record:
            assert self.staging is not None
            files: dict[str, StoredFile] = {}
            for item in sorted(os.scandir(self.staging), key=lambda e: e.name):
                if not item.is_file(follow_symlinks=False):
                    raise OSError(errno.EINVAL, f"unexpected item {item.path} in a session entry")
                try:
                    check_relpath(item.name)
                except Exception as exc:
                    raise OSError(errno.EINVAL, f"unexpected file {item.path}") from exc
                fd = os.open(item.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    if self.durable:
                        os.fsync(fd)
                    value = checksum_fd(fd)
                    remember(fd, value)
                    size = os.fstat(fd).st_size
                finally:
                    os.close(fd)
                files[item.name] = StoredFile(item.name, size, value)
            return Record(
                kind="session",
                key=self.key,
                label=label,
                created=time.time(),
                files=files,
                made_by=runtime,
                built_from=dict(self._built_from),
            )

        final, record = self._commit(seal)
        if self._on_commit is not None:
            self._on_commit(self.key, record.nbytes)
        return final

    def _final(self, key: str) -> Path:
        area(self.root, "sessions")
        return session_dir(self.root, key)
