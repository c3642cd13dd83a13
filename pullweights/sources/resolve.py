"""What a model string means, decided in one place: the GGUF file(s) and their bytes.

:func:`resolve_model` turns what a user wrote (a path, part paths, a URL, an installed
model name, the first shard of a split GGUF, or an open source) into a
:class:`ResolvedModel`: the list of GGUF *shards* to open (one for a plain GGUF), each at
one :data:`Location`. It only looks at names and the file system, never at file contents.
:func:`open_location` then opens one location as a :class:`~pullweights.sources.ByteSource`.
The GGUF reader opens what it is given; it never guesses what a string means.

llama.cpp's split GGUF files are named ``<prefix>-<n>-of-<count>.gguf`` (five digits
each, ``n`` from 1; see ``gguf-split``): the name of the first shard stands for all of
them, locally and by URL.

Example::

    resolved = resolve_model("models/qwen-00001-of-00003.gguf")
    [location.path.name for location in resolved.shards]
    # ['qwen-00001-of-00003.gguf', 'qwen-00002-of-00003.gguf', 'qwen-00003-of-00003.gguf']
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yarl

from pullweights.errors import FormatError, SourceError, UnsupportedError
from pullweights.filetypes import describe_directory
from pullweights.sources.base import ByteSource
from pullweights.sources.concat import ConcatSource
from pullweights.sources.file import FileSource
from pullweights.sources.http_settings import HttpSettings
from pullweights.sources.installed import INSTALLED_MODELS, installed_model_parts
from pullweights.sources.progress import ProgressCallback

__all__ = [
    "Location",
    "LocalFile",
    "ModelSpec",
    "OpenSource",
    "PartFiles",
    "RemoteFile",
    "ResolvedModel",
    "SHARD_NAME",
    "open_location",
    "resolve_model",
    "shard_name",
]

#: What :func:`resolve_model` accepts: a path, part paths in order, an installed model
#: name, a URL, or an already open source.
ModelSpec = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | ByteSource

#: A split GGUF shard's file name: prefix, shard number (from 1), shard count.
SHARD_NAME = re.compile(r"(?P<prefix>.+)-(?P<number>\d{5})-of-(?P<count>\d{5})\.gguf", re.ASCII)

# A part file's name: a number between a prefix and a suffix without digits.
_NUMBERED = re.compile(r"(?P<prefix>.*?)(?P<number>\d+)(?P<suffix>\D*)", re.ASCII)


def shard_name(prefix: str, number: int, count: int) -> str:
    """The file name of shard ``number`` (from 1) of ``count``, as llama.cpp writes it."""
    return f"{prefix}-{number:05d}-of-{count:05d}.gguf"


@dataclass(frozen=True, slots=True)
class LocalFile:
    """One local GGUF file, memory-mapped."""

    path: Path

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True, slots=True)
class PartFiles:
    """Local files whose concatenation, in this order, is one GGUF file."""

    paths: tuple[Path, ...]

    def __str__(self) -> str:
        return " ".join(map(str, self.paths))


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """A GGUF file behind an ``http(s)://`` URL."""

    url: str

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True, slots=True)
class OpenSource:
    """A source the caller opened (and keeps ownership of)."""

    source: ByteSource

    def __str__(self) -> str:
        return self.source.name


#: Where the bytes of one GGUF file are.
Location = LocalFile | PartFiles | RemoteFile | OpenSource


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """What a model string means: the GGUF files to open, in order.

    Attributes:
        shards: one location for a plain GGUF; for a split GGUF one per shard, each a
            complete GGUF file holding some of the tensors, the first holding the metadata.
        installed: the installed model's name, when the string named one.
    """

    shards: tuple[Location, ...]
    installed: str | None = None

    @property
    def is_split(self) -> bool:
        return len(self.shards) > 1

    @property
    def name(self) -> str:
        """The model as a user would write it (the first shard's name for a split GGUF)."""
        return self.installed or str(self.shards[0])


def _is_url(text: str) -> bool:
    return text[:8].lower().startswith(("http://", "https://"))


def resolve_model(model: ModelSpec) -> ResolvedModel:
    """Decide what ``model`` names (see the module docs); no file is opened.

    - a :class:`ByteSource`: that source;
    - an installed model name (:mod:`pullweights.sources.installed`) that is not also a
      path: its part files, in order;
    - a path: that file; the first shard of a split GGUF (``...-00001-of-00003.gguf``):
      every shard;
    - several paths: part files, in the order given (concatenated, not copied);
    - an ``http://`` / ``https://`` URL: that URL; a first shard's URL: every shard's.

    Raises:
        UnsupportedError: no path, or a URL among several paths.
        SourceError: a path that is a directory; a missing shard of a split GGUF; an
            installed model whose packages are missing.
        FormatError: part files given out of the order their names number them in.
    """
    if isinstance(model, ByteSource):
        return ResolvedModel((OpenSource(model),))
    if isinstance(model, (str, os.PathLike)):
        given: list[str | os.PathLike[str]] = [model]
    else:
        given = list(model)
        if not given:
            raise UnsupportedError("no model given: the list of part paths is empty")
    if any(isinstance(p, str) and _is_url(p) for p in given):
        if len(given) != 1:
            raise UnsupportedError("a model given as URLs must be one URL (no remote parts)")
        url = str(given[0])
        return ResolvedModel(tuple(RemoteFile(u) for u in _shard_urls(url)))
    if len(given) == 1:
        only = given[0]
        if isinstance(only, str) and only in INSTALLED_MODELS and not os.path.exists(only):
            parts = tuple(installed_model_parts(only))
            return ResolvedModel((PartFiles(parts),), installed=only)
        path = Path(only)
        _check_not_directory(path)
        return ResolvedModel(tuple(LocalFile(p) for p in _shard_paths(path)))
    paths = tuple(Path(p) for p in given)
    for path in paths:
        _check_not_directory(path)
    _check_part_names(paths)
    return ResolvedModel((PartFiles(paths),))


def _check_not_directory(path: Path) -> None:
    if path.is_dir():  # named with what it holds and what to give instead
        raise SourceError(describe_directory(path))


def _shard_paths(path: Path) -> list[Path]:
    match = SHARD_NAME.fullmatch(path.name)
    if match is None or int(match["number"]) != 1 or int(match["count"]) < 2:
        return [path]
    count = int(match["count"])
    shards = [path.with_name(shard_name(match["prefix"], n, count)) for n in range(1, count + 1)]
    missing = [p.name for p in shards if not p.exists()]
    if missing:
        raise SourceError(
            f"{path}: split GGUF of {count} shards, but {len(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing beside it: {', '.join(missing)}"
        )
    return shards


def _shard_urls(url: str) -> list[str]:
    parsed = yarl.URL(url)
    match = SHARD_NAME.fullmatch(parsed.name)
    if match is None or int(match["number"]) != 1 or int(match["count"]) < 2:
        return [url]
    count = int(match["count"])
    others = [
        str(parsed.with_name(shard_name(match["prefix"], n, count)).with_query(parsed.query))
        for n in range(2, count + 1)
    ]
    return [url, *others]


def _check_part_names(paths: tuple[Path, ...]) -> None:
    """Refuse parts whose names number them in another order than the one given.

    ``model.gguf.part2 model.gguf.part1`` would parse (the header is in one part) and
    then transform garbage: it is caught here by name, and by the GGUF header checks of
    the reader where the names say nothing.
    """
    matches = [_NUMBERED.fullmatch(p.name) for p in paths]
    if any(m is None for m in matches):
        return
    keys = {(m["prefix"], m["suffix"]) for m in matches if m is not None}
    numbers = [int(m["number"]) for m in matches if m is not None]
    if len(keys) != 1 or len(set(numbers)) != len(numbers) or numbers == sorted(numbers):
        return
    ordered = [p for _, p in sorted(zip(numbers, paths, strict=True))]
    raise FormatError(
        f"part files given out of order: their names number them {numbers}; concatenated "
        f"in that order they are not one file. Give them in order: "
        f"{' '.join(str(p) for p in ordered)}"
    )


async def open_location(
    location: Location,
    *,
    remote_dir: str | os.PathLike[str] | None = None,
    http: HttpSettings | None = None,
    offline: bool = False,
    refresh: bool = False,
    progress: ProgressCallback | None = None,
) -> ByteSource:
    """Open the bytes at ``location`` (an :class:`OpenSource` is returned as it is).

    Args:
        remote_dir: where URLs are remembered (``<cache>/remote``); see
            :class:`~pullweights.sources.RemoteSource`.
        http: HTTP settings for a URL.
        offline, refresh: see :meth:`~pullweights.sources.RemoteSource.open`.
        progress: byte progress of remote transfers.

    Raises:
        SourceError: a file cannot be opened; FetchError: a URL cannot be opened.
    """
    if isinstance(location, OpenSource):
        return location.source
    if isinstance(location, LocalFile):
        return FileSource(location.path)
    if isinstance(location, PartFiles):
        if len(location.paths) == 1:
            return FileSource(location.paths[0])
        return ConcatSource.from_paths(location.paths)
    from pullweights.sources.remote import RemoteSource  # aiohttp loads on first use

    return await RemoteSource.open(
        location.url,
        remote_dir,
        settings=http,
        offline=offline,
        refresh=refresh,
        progress=progress,
    )
