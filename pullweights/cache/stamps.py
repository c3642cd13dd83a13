"""Verification stamps: entries whose files were checksummed, remembered across processes.

Verifying an entry reads every byte of it: for qwen2.5-coder-0.5b's saved sessions
0.27 s of CPU on each warm load (and the pages, once more). A *stamp* records that every
file of one entry (weight entry or saved session) matched its recorded checksum while
the file had exactly its current identity — device, inode, size, mtime and ctime. A
later process that finds the same identities skips reading them again:

* any write to a file, a truncation, a rename over it or a ``chmod`` moves its ctime,
  which cannot be set back (``os.utime`` sets mtime and atime; ctime becomes *now*), so
  a file changed after its stamp is checked in full again;
* a stamp is only written for files whose ctime is more than :data:`SETTLED_NS` in the
  past: the kernel's file clock ticks coarsely (1-4 ms), and a write within the same tick
  as the check would leave the identity as it was;
* what a stamp cannot see is a byte changed underneath the filesystem (a failing disk):
  ``pullweights cache verify`` and :meth:`~pullweights.cache.WeightCache.verify` read
  everything, stamps or not.

Stamps live in ``<root>/verified/<kind>-<key>``, each one line (a digest of the
identities and checksums); a missing, unreadable or unwritable stamp only means the
files are read again. Stamps of entries that are gone are swept with the index.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

from pullweights.cache.confined import area, list_area, read_inside, replace_file

__all__ = ["AREA", "SETTLED_NS", "identity", "stamp", "stamped", "sweep"]

log = logging.getLogger("pullweights.cache")

#: The cache area holding stamps.
AREA = "verified"
#: Files changed less than this long ago (ctime) are verified but not stamped.
SETTLED_NS = 2_000_000_000


def identity(files: Iterable[tuple[str, str, os.stat_result]]) -> tuple[str, int]:
    """The stamp line of ``(name, checksum, stat)`` for every file of an entry, and the
    newest ctime among them (ns)."""
    h = hashlib.sha256(b"pullweights-stamp\0")
    newest = 0
    for name, checksum, st in sorted(files, key=lambda f: f[0]):
        fields = (name, checksum, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        h.update("\0".join(map(str, fields)).encode() + b"\n")
        newest = max(newest, st.st_ctime_ns)
    return h.hexdigest(), newest


def _path(root: Path, kind: str, key: str) -> Path:
    return root / AREA / f"{kind}-{key}"


def stamped(root: Path, kind: str, key: str, line: str) -> bool:
    """True if entry ``key``'s stamp says its files, with the identity ``line``, were
    verified."""
    try:
        return read_inside(root, _path(root, kind, key), limit=256).decode() == line
    except (OSError, UnicodeDecodeError):
        return False


def stamp(root: Path, kind: str, key: str, line: str, newest_ctime_ns: int) -> None:
    """Record that entry ``key``'s files were all verified with identity ``line`` (not
    when one changed in the last :data:`SETTLED_NS`; a cache that cannot be written
    keeps no stamp)."""
    if time.time_ns() - newest_ctime_ns < SETTLED_NS:
        return
    try:
        replace_file(root, area(root, AREA) / f"{kind}-{key}", line.encode())
    except OSError as exc:
        log.debug("no verification stamp for %s %s: %s", kind, key, exc)


def sweep(root: Path, live: set[tuple[str, str]]) -> None:
    """Remove the stamps of entries not in ``live`` (``(kind, key)`` pairs)."""
    for item in list_area(root / AREA):
        kind, _, key = item.name.partition("-")
        if (kind, key) not in live:
            with contextlib.suppress(OSError):
                os.unlink(item.path)
