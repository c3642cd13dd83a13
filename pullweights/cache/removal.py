"""Deleting from the cache without ever exposing a half-deleted entry.

A directory leaves ``entries/`` (or ``staging/``) by one atomic rename into ``trash/``; only
then is it deleted file by file, so a crash mid-delete leaves garbage in ``trash/`` and
never a partial entry. Anything in ``trash/`` may be deleted by any process at any time.

A writer holds an exclusive ``flock`` on its staging directory while it writes; the lock
dies with the process, so a staging directory whose lock can be taken belongs to a writer
that has stopped (killed, crashed, or never closed) and is moved to the trash.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from pullweights.cache.confined import (
    Outside,
    area,
    delete_all_in,
    is_area_link,
    move_to_trash,
    open_dir,
)

__all__ = [
    "Outside",
    "clean_staging",
    "discard",
    "empty_trash",
    "fsync_path",
    "make_staging",
    "move_to_trash",
    "publish",
]


def make_staging(root: Path, key: str) -> tuple[Path, int]:
    """A fresh staging directory ``root/staging/<key>.<pid>.<token>``, locked.

    Returns the directory and the descriptor holding its ``flock`` (close it to release).

    Raises:
        OSError: the directory cannot be created.
        RuntimeError: a cleaner kept moving fresh directories away.
    """
    staging_root = area(root, "staging")
    for _attempt in range(8):
        path = staging_root / f"{key}.{os.getpid()}.{secrets.token_hex(4)}"
        os.mkdir(path)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            in_place = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            in_place = False
        if in_place:
            return path, fd
        os.close(fd)  # a cleaner moved it away before we locked it
    raise RuntimeError(f"cannot create a staging directory in {staging_root}")


def empty_trash(root: Path) -> None:
    """Delete everything in ``root/trash`` (other processes may be doing the same)."""
    delete_all_in(root, "trash")


def clean_staging(root: Path, remove: bool = True) -> list[Path]:
    """Find staging directories of writers that stopped; move them to the trash if ``remove``.

    Returns the abandoned directories found. A live writer's directory is locked and
    skipped. The lock is taken before the move, and a writer checks after locking that its
    directory is still in place, so a writer that just created its directory is never
    robbed of it.
    """
    found: list[Path] = []
    if is_area_link(root, "staging"):
        if remove:
            area(root, "staging")  # the link goes, its target is never looked into
        return found
    try:
        items = list(os.scandir(root / "staging"))
    except (FileNotFoundError, NotADirectoryError):
        return found
    for item in items:
        path = Path(item.path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        except OSError:  # a link or a file: nothing a writer made; remove the name only
            found.append(path)
            if remove:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a writer is alive and holds it
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path).st_ino != os.fstat(fd).st_ino:
                    continue  # renamed away (committed) since we listed it
                found.append(path)
                if remove:
                    move_to_trash(root, path)
        finally:
            os.close(fd)
    if remove and found:
        empty_trash(root)
    return found


def discard(root: Path, staging: Path) -> None:
    """Throw a writer's staging directory away; on failure it is left for the next
    :func:`clean_staging` (the writer's lock dies with its process)."""
    with contextlib.suppress(OSError):
        move_to_trash(root, staging)
        empty_trash(root)


def fsync_path(path: Path) -> None:
    """``fsync`` a file or directory by path."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rename_inside(root: Path, src: Path, dst: Path) -> None:
    """``os.rename(src, dst)`` through descriptors of real directories under ``root``."""
    src_parts, dst_parts = src.relative_to(root).parts, dst.relative_to(root).parts
    src_fd = open_dir(root, src_parts[:-1])
    try:
        dst_fd = open_dir(root, dst_parts[:-1])
        try:
            os.rename(src_parts[-1], dst_parts[-1], src_dir_fd=src_fd, dst_dir_fd=dst_fd)
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)


def publish(
    root: Path, staging: Path, final: Path, is_whole: Callable[[Path], bool], durable: bool
) -> bool:
    """Rename a finished ``staging`` directory to ``final`` in one atomic step.

    If another writer published ``final`` first, its entry is kept when ``is_whole`` says
    so (returns False: the caller discards ``staging``); a broken one is moved to the
    trash and the rename retried. Returns True when ``staging`` became ``final``.

    Raises:
        OSError: the rename failed for another reason, or kept losing the race.
    """
    replaced = False
    for _attempt in range(4):
        try:
            _rename_inside(root, staging, final)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise
        else:
            if durable:
                fsync_path(final.parent)
            if replaced:
                empty_trash(root)
            return True
        if is_whole(final):
            return False
        replaced = move_to_trash(root, final) or replaced
    raise OSError(errno.EEXIST, f"cannot publish {final}: other writers keep replacing it")
