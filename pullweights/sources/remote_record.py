"""What is remembered about a URL on disk: its identity, validator, header bytes and copy.

Each remembered URL has, in one directory (``<cache>/remote/``), files named by a hash of
the URL:

- ``<stem>.head``: the header bytes the GGUF parser read;
- ``<stem>.json``: the record — URL, size, identity, ETag / Last-Modified, whether the
  server honours ``Range``, the length and SHA-256 of the head file, the name and CRC-32
  of a complete local copy (``<stem>.data``, only for servers without range support) —
  and a SHA-256 of the record itself.

Files are written to a temporary name, fsynced and renamed, the record last, so a crash
leaves either the old record or the new one. Nothing read back is trusted: a record that
does not parse, has a field of the wrong type, fails its own checksum, or whose head file
has another length or digest is *damaged*: it is reported (a warning), its files are
removed, and the URL counts as not remembered, so it is fetched again. Never a traceback,
never a header that is not the one that was fetched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import mmap
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pullweights.errors import SourceError
from pullweights.sources.http_validate import Validator

__all__ = ["RECORD_VERSION", "RecordStore", "RemoteRecord", "head_digest", "verify_remembered"]

logger = logging.getLogger("pullweights.sources.remote")

RECORD_VERSION = 2
#: A record is a few hundred bytes; anything much larger is not one.
_MAX_RECORD_BYTES = 1 << 20


def head_digest(data: bytes | bytearray | memoryview | mmap.mmap) -> str:
    """``sha256:<hex>`` of header bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class RemoteRecord:
    """One remembered URL (see the module docs)."""

    url: str
    size: int
    #: Identity of the bytes, as :attr:`pullweights.sources.ByteSource.identity`.
    identity: str
    etag: str | None
    last_modified: str | None
    accepts_ranges: bool
    head_length: int
    head_sha256: str
    #: File name (in the record's directory) of the complete local copy, if any.
    download: str | None = None
    #: ``crc32:<hex>`` of that copy.
    download_crc32: str | None = None

    @property
    def validator(self) -> Validator:
        return Validator(self.etag, self.last_modified)

    def _body(self) -> dict[str, Any]:
        return {"version": RECORD_VERSION, **asdict(self)}


_TYPES: dict[str, tuple[type, ...]] = {
    "url": (str,),
    "size": (int,),
    "identity": (str,),
    "etag": (str, type(None)),
    "last_modified": (str, type(None)),
    "accepts_ranges": (bool,),
    "head_length": (int,),
    "head_sha256": (str,),
    "download": (str, type(None)),
    "download_crc32": (str, type(None)),
}


def _checksum(body: dict[str, Any]) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class _Damaged(Exception):
    """A record or head file that cannot be trusted (internal)."""


def _parse_record(text: bytes, url: str) -> RemoteRecord:
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Damaged(f"the record is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise _Damaged("the record is not a JSON object")
    if doc.get("version") != RECORD_VERSION:
        raise _Damaged(f"record version {doc.get('version')!r}, expected {RECORD_VERSION}")
    claimed = doc.pop("checksum", None)
    if claimed != _checksum(doc):
        raise _Damaged("the record does not match its checksum")
    doc.pop("version")
    for name, types in _TYPES.items():
        value = doc.get(name)
        # bool is an int: a size of True is as wrong as a size of "3".
        if not isinstance(value, types) or (int in types and isinstance(value, bool)):
            raise _Damaged(f"field {name!r} is {value!r}")
    if set(doc) != set(_TYPES):
        raise _Damaged(f"unexpected fields {sorted(set(doc) - set(_TYPES))}")
    record = RemoteRecord(**doc)
    if record.url != url:
        raise _Damaged(f"it is the record of {record.url!r}")
    if not 0 <= record.head_length <= record.size:
        raise _Damaged(f"head length {record.head_length} for an object of {record.size} bytes")
    if (record.download is None) != (record.download_crc32 is None) or (
        record.download is not None and Path(record.download).name != record.download
    ):
        raise _Damaged(f"bad local copy entry {record.download!r}")
    return record


def _atomic_write(path: Path, data: bytes | bytearray | memoryview) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort where unsupported)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class RecordStore:
    """The remembered URLs in ``directory`` (created on first write)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def stem(self, url: str) -> str:
        return hashlib.sha256(url.encode()).hexdigest()[:32]

    def record_path(self, url: str) -> Path:
        return self.directory / f"{self.stem(url)}.json"

    def head_path(self, url: str) -> Path:
        return self.directory / f"{self.stem(url)}.head"

    def data_path(self, url: str) -> Path:
        """Where the complete local copy of ``url`` goes (servers without ``Range``)."""
        return self.directory / f"{self.stem(url)}.data"

    def load(self, url: str) -> tuple[RemoteRecord, mmap.mmap | bytes] | None:
        """The record of ``url`` and its head bytes (mapped), or ``None`` if not remembered.

        A damaged record is reported, removed and treated as not remembered.
        """
        record_path = self.record_path(url)
        try:
            with open(record_path, "rb") as f:
                text = f.read(_MAX_RECORD_BYTES + 1)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            self._damaged(url, f"the record cannot be read ({exc.strerror})")
            return None
        try:
            return self._checked(url, text)
        except _Damaged as exc:
            self._damaged(url, str(exc))
            return None

    def _checked(self, url: str, text: bytes) -> tuple[RemoteRecord, mmap.mmap | bytes]:
        """The record of ``url`` in ``text`` and its head bytes, every part checked.

        Raises:
            _Damaged: the record, its head file or its local copy cannot be trusted.
        """
        if len(text) > _MAX_RECORD_BYTES:
            raise _Damaged(f"the record is over {_MAX_RECORD_BYTES} bytes")
        record = _parse_record(text, url)
        head = self._map_head(url, record)
        if record.download is not None:
            copy = self.directory / record.download
            try:
                copy_size = copy.stat().st_size
            except OSError:
                _close(head)
                raise _Damaged(f"its local copy {copy} is missing") from None
            if copy_size != record.size:
                _close(head)
                raise _Damaged(f"its local copy {copy} has {copy_size} of {record.size} bytes")
        return record, head

    def _map_head(self, url: str, record: RemoteRecord) -> mmap.mmap | bytes:
        try:
            with open(self.head_path(url), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size != record.head_length:
                    raise _Damaged(f"the head file has {size} bytes, expected {record.head_length}")
                head: mmap.mmap | bytes = (
                    mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
                )
        except OSError as exc:
            raise _Damaged(f"the head file cannot be read ({exc.strerror})") from None
        if head_digest(head) != record.head_sha256:
            if isinstance(head, mmap.mmap):
                head.close()
            raise _Damaged("the head file does not match its SHA-256")
        return head

    def _damaged(self, url: str, why: str) -> None:
        logger.warning(
            "%s: the remembered header in %s is damaged (%s); it is removed and fetched again",
            url,
            self.directory,
            why,
        )
        self.drop(url)

    def save(self, record: RemoteRecord, head: bytes | bytearray | memoryview) -> None:
        """Write the head file, then the record (atomically, fsynced).

        Raises:
            SourceError: the directory cannot be written.
        """
        body = record._body()
        body["checksum"] = _checksum(body)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            _atomic_write(self.head_path(record.url), head)
            _atomic_write(self.record_path(record.url), json.dumps(body).encode())
            fsync_directory(self.directory)
        except OSError as exc:
            raise SourceError(
                f"{record.url}: cannot record the header in {self.directory}: {exc}"
            ) from exc

    def drop(self, url: str, *, keep_copy: bool = False) -> None:
        """Forget ``url``: remove its record (first), head file and local copy."""
        paths = [self.record_path(url), self.head_path(url)]
        if not keep_copy:
            paths.append(self.data_path(url))
        for path in paths:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)


def _close(head: mmap.mmap | bytes) -> None:
    if isinstance(head, mmap.mmap):
        with contextlib.suppress(BufferError):
            head.close()


def verify_remembered(path: Path) -> str | None:
    """What is wrong with the remembered URL whose record is ``path``
    (``<directory>/<stem>.json``): the record, its head file and its local copy are
    checked as a load checks them. None if nothing is; removes nothing (what
    ``pullweights cache verify`` calls)."""
    try:
        with open(path, "rb") as f:
            text = f.read(_MAX_RECORD_BYTES + 1)
    except OSError as exc:
        return f"the record cannot be read ({exc.strerror})"
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"the record is not JSON ({exc})"
    url = doc.get("url") if isinstance(doc, dict) else None
    if not isinstance(url, str):
        return "the record names no URL"
    store = RecordStore(path.parent)
    if store.record_path(url) != path:
        return f"the record of {url!r} is stored under another name"
    try:
        _record, head = store._checked(url, text)
    except _Damaged as exc:
        return str(exc)
    _close(head)
    return None
