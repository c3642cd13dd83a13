"""File operations that never leave the cache directory.

What is guarded against: files placed in the cache directory by accident or by someone
else (a bad restore, a shared cache, a hostile user of it) — a symbolic link where
``trash/`` or ``staging/`` belongs, an entry whose chunk file links to a file elsewhere,
a key-prefix directory that links out. The cache directory itself may be a link (a user
pointing ``~/.cache/pullweights`` at another disk); nothing below it is followed:

* every area (``entries/``, ``sessions/``, ``staging/``, ``trash/``, ...) must be a real
  directory: :func:`area` replaces a link or a stray file in its place by an empty
  directory (unlinking only the link, never its target) and warns;
* files are opened with ``O_NOFOLLOW`` and must resolve under the cache directory
  (:func:`open_inside`, checked through ``/proc/self/fd`` after the open, so a link
  anywhere on the path is caught);
* deletion goes through directory descriptors opened with ``O_NOFOLLOW``
  (:func:`move_to_trash`, :func:`delete_all_in`), and ``shutil.rmtree(dir_fd=...)``,
  which never follows a link.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import shutil
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = [
    "Outside",
    "area",
    "delete_all_in",
    "is_area_link",
    "list_area",
    "move_to_trash",
    "open_dir",
    "open_inside",
    "read_inside",
    "replace_file",
    "write_new_file",
]

log = logging.getLogger("pullweights.cache")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PROC_FD = Path("/proc/self/fd")


class Outside(OSError):
    """A path in the cache leads outside it through a link, or is not what it should be."""


@functools.lru_cache(maxsize=32)
def _real_root(root: str) -> str:
    return os.path.realpath(root)


def _check_inside(root: Path, fd: int, path: Path) -> None:
    """Raise :class:`Outside` unless the open ``fd`` lies under ``root``."""
    try:
        real = os.readlink(_PROC_FD / str(fd))
    except OSError:  # no /proc: resolve the path instead (the open did not follow the leaf)
        real = os.path.realpath(path)
    top = _real_root(str(root))
    if real != top and not real.startswith(top.rstrip(os.sep) + os.sep):
        raise Outside(f"{path} leads outside the cache directory {root} (to {real})")


def open_inside(root: Path, path: Path, flags: int = os.O_RDONLY) -> int:
    """``os.open(path, flags)`` without following a link, for a ``path`` under ``root``.

    Raises:
        FileNotFoundError, NotADirectoryError: the path does not exist.
        Outside: the path is a link, or passes through one out of the cache.
        OSError: anything else ``open`` raises.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if os.path.islink(path):
            raise Outside(f"{path} is a symbolic link; the cache never follows one") from exc
        raise
    try:
        _check_inside(root, fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_inside(root: Path, path: Path, limit: int = 16 << 20) -> bytes:
    """The bytes of a small file under ``root`` (see :func:`open_inside`), at most ``limit``.

    Raises:
        Outside: a link, or a file larger than ``limit``. OSError: it cannot be read.
    """
    fd = open_inside(root, path)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Outside(f"{path} is not a regular file")
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise Outside(f"{path} is over {limit} bytes: not a cache record")
    return data


def open_dir(root: Path, parts: Sequence[str]) -> int:
    """A descriptor of ``root/parts[0]/parts[1]/...``, each part a real directory.

    Raises:
        FileNotFoundError: a part is missing.
        Outside: a part is a link or not a directory.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in parts:
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                raise
            except OSError as exc:  # ELOOP (a link), ENOTDIR (a file)
                raise Outside(f"{os.path.join(root, *parts)}: {name} is not a directory") from exc
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def area(root: Path, name: str, *, create: bool = True) -> Path:
    """``root/name`` as a real directory (created if ``create``), never a link.

    A link or a non-directory in its place is unlinked (its target is left alone) and
    replaced by an empty directory, with a warning.

    Raises:
        OSError: it cannot be created or replaced (a read-only cache).
    """
    path = root / name
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        return path
    if stat.S_ISDIR(st.st_mode):
        return path
    what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a directory"
    log.warning("cache area %s is %s; replaced by an empty directory", path, what)
    os.unlink(path)
    if create:
        path.mkdir(exist_ok=True)
    return path


def is_area_link(root: Path, name: str) -> bool:
    """True if ``root/name`` exists and is not a real directory."""
    try:
        return not stat.S_ISDIR(os.lstat(root / name).st_mode)
    except FileNotFoundError:
        return False


def move_to_trash(root: Path, path: Path) -> bool:
    """Atomically move ``path`` (under ``root``) into ``root/trash``; False if it was gone.

    The rename goes through descriptors of real directories: a link on the way is never
    followed (the entry is then left alone and :class:`Outside` raised).
    """
    parts = path.relative_to(root).parts
    if not parts or parts[0] == "trash":
        raise Outside(f"{path}: not an entry of the cache at {root}")
    trash = area(root, "trash")
    try:
        parent = open_dir(root, parts[:-1])
    except FileNotFoundError:
        return False
    try:
        trash_fd = open_dir(root, [trash.name])
        try:
            target = f"{parts[-1]}.{secrets.token_hex(4)}"
            os.rename(parts[-1], target, src_dir_fd=parent, dst_dir_fd=trash_fd)
        except FileNotFoundError:
            return False
        finally:
            os.close(trash_fd)
    finally:
        os.close(parent)
    return True


def _entries(fd: int) -> Iterator[os.DirEntry[str]]:
    with os.scandir(fd) as items:
        yield from list(items)


def delete_all_in(root: Path, name: str) -> None:
    """Delete everything inside the area ``root/name`` (other processes may be doing the
    same); a link in place of the area is replaced, never followed."""
    if is_area_link(root, name):
        area(root, name)
        return
    try:
        fd = open_dir(root, [name])
    except (FileNotFoundError, Outside):
        return
    try:
        for item in _entries(fd):
            try:
                if item.is_dir(follow_symlinks=False):
                    shutil.rmtree(item.name, dir_fd=fd, onexc=_ignore_missing)
                else:
                    os.unlink(item.name, dir_fd=fd)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot delete %s from %s: %s", item.name, root / name, exc)
    finally:
        os.close(fd)


def _ignore_missing(func: object, path: str, exc: BaseException) -> None:
    if not isinstance(exc, FileNotFoundError):
        raise exc


def write_new_file(path: Path, data: bytes, *, durable: bool) -> None:
    """Create ``path`` (it must not exist), write all of ``data``, ``fsync`` if durable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def list_area(directory: Path) -> list[os.DirEntry[str]]:
    """The items of ``directory`` by name; none if it is missing, a link or a file."""
    try:
        if not stat.S_ISDIR(os.lstat(directory).st_mode):
            return []
        with os.scandir(directory) as items:
            return sorted(items, key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


def replace_file(root: Path, path: Path, data: bytes, *, durable: bool = False) -> None:
    """Write ``path`` (under ``root``) atomically: a temporary file in the same
    directory, then a rename over it (a crash leaves the old file or the new one)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    try:
        write_new_file(tmp, data, durable=durable)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
