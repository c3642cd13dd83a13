"""GGUF files opened lazily over any byte source: the header is parsed, tensors are pulled later.

Example::

    async with await open_gguf("gemma3-270m") as gguf:
        print(gguf.architecture, len(gguf.tensors))
        norm = gguf.tensors["output_norm.weight"].payload()   # F32: a raw view
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

from gguf.constants import (
    GGML_QUANT_SIZES,
    GGUF_DEFAULT_ALIGNMENT,
    GGMLQuantizationType,
    GGUFValueType,
    Keys,
)

from pullweights.descriptor import TensorDescriptor
from pullweights.errors import FormatError, SourceError, UnsupportedError
from pullweights.events import Phase, span
from pullweights.gguf.header import RawHeader, RawTensorInfo, parse_header, read_header
from pullweights.gguf.parts import check_data_end, check_first_part, parts_hint
from pullweights.gguf.plain import PLAIN_TYPES, plain_type
from pullweights.gguf.split import check_not_a_lone_shard, join_shards
from pullweights.sources.base import ByteSource
from pullweights.sources.concat import ConcatSource
from pullweights.sources.http_settings import HttpSettings
from pullweights.sources.progress import ProgressCallback
from pullweights.sources.resolve import (
    Location,
    ModelSpec,
    OpenSource,
    ResolvedModel,
    open_location,
    resolve_model,
)
from pullweights.weights import Payload, Transform

__all__ = [
    "GGUFFile",
    "GGUFTensor",
    "HeaderStore",
    "ModelSpec",
    "open_gguf",
    "open_model_source",
]

#: Largest tensor accepted, in bytes (dimension products past this are corrupt headers).
MAX_TENSOR_BYTES = 2**62


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor of a GGUF file: where its bytes are and what they hold.

    ``shape`` is in numpy order (outermost first; GGUF stores the reverse) and ``offset``
    is absolute in :attr:`source`.
    """

    name: str
    ggml_type: GGMLQuantizationType
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    source: ByteSource = field(repr=False, compare=False)

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def block_size(self) -> int:
        """Elements per quant block (1 for plain types)."""
        return GGML_QUANT_SIZES[self.ggml_type][0]

    @property
    def type_size(self) -> int:
        """Bytes per quant block."""
        return GGML_QUANT_SIZES[self.ggml_type][1]

    def payload(self, transform: Transform | None = None) -> Payload:
        """The tensor's byte range as a :class:`Payload`, labelled with the tensor's name.

        Without ``transform`` the bytes are viewed as they are, which only the plain types
        with a raw view allow (F32, F16, I8, I32, I64: :mod:`pullweights.gguf.plain`);
        other tensors need a layout transform.

        Raises:
            UnsupportedError: no transform was given for a quantized tensor.
        """
        if transform is not None:
            return Payload(self.source, self.offset, self.nbytes, transform, label=self.name)
        plain = plain_type(self.ggml_type)
        dtype = None if plain is None else plain.view
        if dtype is None:
            views = ", ".join(p.name for p in PLAIN_TYPES.values() if p.view is not None)
            raise UnsupportedError(
                f"tensor {self.name!r} is {self.ggml_type.name}: it needs a layout transform "
                f"(raw views exist for {views})"
            )
        desc = TensorDescriptor(dtype, self.shape)
        return Payload(self.source, self.offset, self.nbytes, raw_descriptor=desc, label=self.name)


class GGUFFile:
    """The parsed header of a GGUF file and its tensors; tensor bytes stay in the source.

    Use :meth:`open` (or :func:`open_gguf`) to create one. As an async context manager it
    closes its sources on exit when :func:`open_gguf` opened them.

    A split GGUF opened by :func:`open_gguf` is one :class:`GGUFFile`: the metadata and
    :attr:`source` of its first shard, the tensors of all (each :class:`GGUFTensor` has
    its shard's source) and every shard's source in :attr:`sources`.
    """

    def __init__(self, source: ByteSource, header: RawHeader, *, owns_source: bool) -> None:
        self.source = source
        #: The source of every shard, the first being :attr:`source`.
        self.sources: tuple[ByteSource, ...] = (source,)
        self.version = header.version
        self.metadata: dict[str, object] = header.metadata
        #: Type of each metadata value: ``(t,)`` or ``(ARRAY, element type)``.
        self.value_types: dict[str, tuple[GGUFValueType, ...]] = header.value_types
        #: Absolute byte offset of each metadata value (for error messages).
        self.value_offsets: dict[str, int] = header.value_offsets
        #: Bytes requested from the sources to parse the header(s).
        self.header_bytes_read = header.bytes_read
        self.alignment = _alignment(source, header)
        self.data_offset = _align_up(header.end, self.alignment)
        if header.tensor_infos and self.data_offset > source.size:
            raise FormatError(
                f"{source.name}: tensor data at byte {header.end}: the data section starts at "
                f"{self.data_offset}, past the end of the {source.size}-byte file"
            )
        self.tensors: dict[str, GGUFTensor] = {
            info.name: self._tensor(info) for info in header.tensor_infos
        }
        _check_overlaps(source, header.tensor_infos, self.tensors)
        self._owned: list[ByteSource] = [source] if owns_source else []

    @property
    def data_end(self) -> int | None:
        """End of this file's last tensor, rounded up to the alignment (``None``: no tensors)."""
        ends = [t.offset + t.nbytes for t in self.tensors.values() if t.source is self.source]
        return _align_up(max(ends), self.alignment) if ends else None

    def add_shards(self, shards: Sequence[GGUFFile]) -> None:
        """Take the tensors and sources of the other shards of a split GGUF (see
        :func:`pullweights.gguf.split.join_shards`, which checks them first)."""
        for shard in shards:
            self.tensors.update(shard.tensors)
            self.sources += shard.sources
            self.header_bytes_read += shard.header_bytes_read
            self._owned += shard._owned
            shard._owned = []

    @classmethod
    async def open(cls, source: ByteSource) -> GGUFFile:
        """Parse the header of the GGUF file in ``source``, reading only the header's bytes.

        The caller keeps ownership of ``source``.

        Raises:
            FormatError: the header is malformed (the message names the field and offset).
            UnsupportedError: a GGUF version or tensor type this reader does not handle.
            SourceError: the source could not be read.
        """
        return cls(source, await read_header(source), owns_source=False)

    @property
    def architecture(self) -> str:
        """``general.architecture`` (``FormatError`` if missing)."""
        arch = self.metadata.get(Keys.General.ARCHITECTURE)
        if not isinstance(arch, str):
            raise FormatError(f"{self.source.name}: no {Keys.General.ARCHITECTURE} string")
        return arch

    def get(self, key: str, default: object = None) -> object:
        """A metadata value, or ``default``."""
        return self.metadata.get(key, default)

    def tensor(self, name: str) -> GGUFTensor:
        """The tensor called ``name`` (``FormatError`` naming the file if absent)."""
        try:
            return self.tensors[name]
        except KeyError:
            raise FormatError(f"{self.source.name}: no tensor named {name!r}") from None

    async def aclose(self) -> None:
        """Close the sources :func:`open_gguf` opened (safe to call twice)."""
        owned, self._owned = self._owned, []
        for source in owned:
            await source.aclose()

    async def __aenter__(self) -> GGUFFile:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        arch = self.metadata.get(Keys.General.ARCHITECTURE, "?")
        shards = f", shards={len(self.sources)}" if len(self.sources) > 1 else ""
        return f"GGUFFile({self.source.name!r}, arch={arch}, tensors={len(self.tensors)}{shards})"

    def _tensor(self, info: RawTensorInfo) -> GGUFTensor:
        where = f"{self.source.name}: tensor {info.name!r}"
        try:
            ggml_type = GGMLQuantizationType(info.ggml_type)
            block_size, type_size = GGML_QUANT_SIZES[ggml_type]
        except (ValueError, KeyError):
            raise UnsupportedError(
                f"{where} type at byte {info.type_at}: unknown GGML type {info.ggml_type}"
            ) from None
        n_elements = 1
        for j, d in enumerate(info.dims):
            if d == 0:
                raise FormatError(f"{where} dims[{j}] at byte {info.dim_at(j)}: dimension is 0")
            n_elements *= d
            if n_elements * type_size > MAX_TENSOR_BYTES * block_size:
                raise FormatError(
                    f"{where} dims[{j}] at byte {info.dim_at(j)}: dimensions {list(info.dims)} "
                    f"make a tensor over 2**62 bytes"
                )
        if info.dims[0] % block_size:
            raise FormatError(
                f"{where} dims[0] at byte {info.dim_at(0)}: {info.dims[0]} is not a multiple "
                f"of the {ggml_type.name} block size {block_size}"
            )
        nbytes = n_elements // block_size * type_size
        if info.offset % self.alignment:
            raise FormatError(
                f"{where} offset at byte {info.offset_at}: {info.offset} is not a multiple of "
                f"the alignment {self.alignment}"
            )
        start = self.data_offset + info.offset
        if start + nbytes > self.source.size:
            raise FormatError(
                f"{where} offset at byte {info.offset_at}: data [{start}, {start + nbytes}) "
                f"lies outside the {self.source.size}-byte file"
            )
        shape = tuple(reversed(info.dims))
        return GGUFTensor(info.name, ggml_type, shape, start, nbytes, self.source)


def _align_up(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


def _alignment(source: ByteSource, header: RawHeader) -> int:
    key = Keys.General.ALIGNMENT
    if key not in header.metadata:
        return GGUF_DEFAULT_ALIGNMENT
    at = header.value_offsets[key]
    value = header.metadata[key]
    if header.value_types[key] != (GGUFValueType.UINT32,):
        types = "/".join(t.name for t in header.value_types[key])
        raise FormatError(f"{source.name}: {key} at byte {at}: type {types}, expected UINT32")
    assert isinstance(value, int)
    if value <= 0 or value & (value - 1):
        raise FormatError(f"{source.name}: {key} at byte {at}: {value} is not a power of two")
    return value


def _check_overlaps(
    source: ByteSource, infos: list[RawTensorInfo], tensors: dict[str, GGUFTensor]
) -> None:
    by_name = {info.name: info for info in infos}
    ordered = sorted(tensors.values(), key=lambda t: (t.offset, t.nbytes))
    for prev, cur in itertools.pairwise(ordered):
        if cur.offset < prev.offset + prev.nbytes:
            raise FormatError(
                f"{source.name}: tensor {cur.name!r} offset at byte {by_name[cur.name].offset_at}"
                f": data [{cur.offset}, {cur.offset + cur.nbytes}) overlaps tensor "
                f"{prev.name!r} [{prev.offset}, {prev.offset + prev.nbytes})"
            )


async def open_model_source(
    model: ModelSpec,
    *,
    remote_dir: str | os.PathLike[str] | None = None,
    http: HttpSettings | None = None,
    offline: bool = False,
    refresh: bool = False,
) -> ByteSource:
    """The bytes of a model that is one GGUF file (see
    :func:`pullweights.sources.resolve.resolve_model` for what ``model`` may be).

    Raises:
        UnsupportedError: ``model`` is a split GGUF (open it with :func:`open_gguf`).
        SourceError, FetchError: see :func:`~pullweights.sources.resolve.open_location`.
    """
    resolved = resolve_model(model)
    if resolved.is_split:
        raise UnsupportedError(
            f"{resolved.name}: a split GGUF of {len(resolved.shards)} shards is not one "
            "source; open it with open_gguf"
        )
    return await open_location(
        resolved.shards[0], remote_dir=remote_dir, http=http, offline=offline, refresh=refresh
    )


async def open_gguf(
    model: ModelSpec | ResolvedModel,
    *,
    remote_dir: str | os.PathLike[str] | None = None,
    http: HttpSettings | None = None,
    offline: bool = False,
    refresh: bool = False,
    progress: ProgressCallback | None = None,
    headers: HeaderStore | None = None,
) -> GGUFFile:
    """Open a GGUF model: a path, part paths, a URL, an installed name, split shards, a source.

    What ``model`` means is decided by :func:`~pullweights.sources.resolve.resolve_model`
    (or pass its :class:`~pullweights.sources.resolve.ResolvedModel`). Only headers are
    read. The returned file closes the sources it opened when it is closed
    (``async with``, :meth:`GGUFFile.aclose`); a source passed in is left open.

    Example::

        gguf = await open_gguf(["model.gguf.part00", "model.gguf.part01"])
        async with gguf:
            print(gguf.architecture)

    Args:
        remote_dir: where URLs are remembered (``<cache>/remote``); see
            :class:`~pullweights.sources.RemoteSource`.
        http: HTTP settings for URLs (default ``HttpSettings()``).
        offline: open URLs from what is remembered only, with no network request.
        refresh: fetch remembered URLs' headers again.
        progress: byte progress of remote transfers.
        headers: where parsed headers are kept by source identity (a cache's
            :attr:`~pullweights.cache.WeightCache.headers`): a header found there is
            not parsed again (unless ``refresh``).

    Raises:
        FormatError, UnsupportedError, SourceError: see :meth:`GGUFFile.open` and
        :func:`~pullweights.sources.resolve.resolve_model`; part files out of order; a
        missing shard, wrong shard count or shards of different models.
    """
    resolved = model if isinstance(model, ResolvedModel) else resolve_model(model)
    files: list[GGUFFile] = []
    try:
        for index, location in enumerate(resolved.shards):
            try:
                source = await open_location(
                    location,
                    remote_dir=remote_dir,
                    http=http,
                    offline=offline,
                    refresh=refresh,
                    progress=progress,
                )
            except SourceError as exc:
                if not resolved.is_split:
                    raise
                raise type(exc)(
                    f"shard {index + 1} of {len(resolved.shards)} of the split GGUF "
                    f"{resolved.name} cannot be opened: {exc}"
                ) from exc
            files.append(await _open_file(location, source, headers, stored=not refresh))
        if len(files) == 1:
            check_not_a_lone_shard(files[0])
            return files[0]
        return join_shards(files)
    except BaseException:
        for opened in files:
            await opened.aclose()
        raise


class HeaderStore(Protocol):
    """Parsed headers by :attr:`~pullweights.sources.ByteSource.identity` (see
    :class:`pullweights.cache.headers.HeaderStore`); blocking: ``get`` and ``put`` run in
    a worker thread, ``discard`` (a file unlink) on the caller's."""

    def get(self, identity: str) -> RawHeader | None: ...

    def put(self, identity: str, header: RawHeader) -> None: ...

    def discard(self, identity: str) -> None: ...


async def _header(source: ByteSource, headers: HeaderStore | None, stored: bool) -> RawHeader:
    """``source``'s header from ``headers`` (if ``stored``), else parsed (and kept there)."""
    with span(Phase.HEADER, source.name) as s:
        # The store reads and writes a few MB (10-70 ms): off the event loop. A cancelled
        # open leaves at most a read, or an atomic write, finishing in its thread.
        header = None
        if headers is not None and stored:
            header = await asyncio.to_thread(headers.get, source.identity)
        if header is None:
            header = await parse_header(source)
            s.nbytes = header.bytes_read
            if headers is not None:
                await asyncio.to_thread(headers.put, source.identity, header)
    return header


async def _open_file(
    location: Location, source: ByteSource, headers: HeaderStore | None = None, stored: bool = True
) -> GGUFFile:
    """Parse one GGUF file's header; the file owns ``source`` unless it was passed in."""
    owns = not isinstance(location, OpenSource)
    try:
        if isinstance(source, ConcatSource):
            await check_first_part(source)
        try:
            try:
                gguf = GGUFFile(source, await _header(source, headers, stored), owns_source=owns)
            except FormatError:
                if headers is None or not stored:
                    raise
                # A stored header the file disagrees with is dropped: the file decides.
                headers.discard(source.identity)
                gguf = GGUFFile(source, await _header(source, headers, False), owns_source=owns)
        except FormatError as exc:
            if not isinstance(source, ConcatSource):
                raise
            raise FormatError(str(exc) + parts_hint(source)) from exc
        if isinstance(source, ConcatSource):
            check_data_end(source, gguf.data_end)
        remember = getattr(source, "remember_header", None)
        if remember is not None:
            await remember(gguf.data_offset)
        return gguf
    except BaseException:
        if owns:
            await source.aclose()
        raise
