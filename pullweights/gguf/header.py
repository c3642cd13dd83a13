"""Bounded parser of a GGUF header: magic, version, counts, metadata and tensor infos.

The header is read from a :class:`~pullweights.sources.ByteSource` in growing windows
(64 KiB doubling up to 4 MiB), so opening a multi-gigabyte file reads little more than its
header. Nothing read from the file is trusted: every count and length is checked against
the bytes left in the source *before* anything is allocated for it, so a hostile header
can make the parser allocate no more than the file's own size could justify, and every
loop is bounded by a count that was checked that way.

This module only decodes the layout; :mod:`pullweights.gguf.reader` checks what the
values mean (alignment, tensor types, shapes, data ranges).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from gguf.constants import GGUF_MAGIC, GGUFValueType

from pullweights.errors import FormatError, UnsupportedError
from pullweights.events import Phase, span
from pullweights.filetypes import GGUF_ONLY, describe_foreign
from pullweights.sources.base import ByteSource

__all__ = [
    "MAX_ARRAY_DEPTH",
    "MAX_DIMS",
    "MAX_HEADER_BYTES",
    "MAX_STRING_BYTES",
    "SUPPORTED_VERSIONS",
    "RawHeader",
    "RawTensorInfo",
    "parse_header",
    "read_header",
]

#: GGUF versions this parser reads (v2 and v3 share one layout; v1 had 32-bit counts).
SUPPORTED_VERSIONS = (2, 3)
#: Deepest nesting of metadata arrays accepted (arrays of arrays of ...).
MAX_ARRAY_DEPTH = 8
#: Most dimensions a tensor may have (``GGML_MAX_DIMS``).
MAX_DIMS = 4
#: First read size; each further read doubles it up to :data:`MAX_WINDOW`.
INITIAL_WINDOW = 64 * 1024
MAX_WINDOW = 4 * 1024 * 1024
#: Longest metadata string (a chat template is a few KB, a token a few bytes): a length
#: that merely fits in the file would read that much of it into memory.
MAX_STRING_BYTES = 16 * 1024 * 1024
#: Most header bytes read (real headers, 262k-token vocabularies with merges: 6-20 MB).
MAX_HEADER_BYTES = 256 * 1024 * 1024

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

_SCALARS: dict[GGUFValueType, struct.Struct] = {
    GGUFValueType.UINT8: struct.Struct("<B"),
    GGUFValueType.INT8: struct.Struct("<b"),
    GGUFValueType.UINT16: struct.Struct("<H"),
    GGUFValueType.INT16: struct.Struct("<h"),
    GGUFValueType.UINT32: _U32,
    GGUFValueType.INT32: struct.Struct("<i"),
    GGUFValueType.FLOAT32: struct.Struct("<f"),
    GGUFValueType.BOOL: struct.Struct("<B"),
    GGUFValueType.UINT64: _U64,
    GGUFValueType.INT64: struct.Struct("<q"),
    GGUFValueType.FLOAT64: struct.Struct("<d"),
}

_ARRAY_DTYPES: dict[GGUFValueType, np.dtype[np.generic]] = {
    GGUFValueType.UINT8: np.dtype("<u1"),
    GGUFValueType.INT8: np.dtype("<i1"),
    GGUFValueType.UINT16: np.dtype("<u2"),
    GGUFValueType.INT16: np.dtype("<i2"),
    GGUFValueType.UINT32: np.dtype("<u4"),
    GGUFValueType.INT32: np.dtype("<i4"),
    GGUFValueType.FLOAT32: np.dtype("<f4"),
    GGUFValueType.BOOL: np.dtype("<u1"),
    GGUFValueType.UINT64: np.dtype("<u8"),
    GGUFValueType.INT64: np.dtype("<i8"),
    GGUFValueType.FLOAT64: np.dtype("<f8"),
}

# Fewest bytes one value of each type occupies: a string is at least its 8-byte length,
# an array at least its 4-byte element type and 8-byte length.
_MIN_SIZE: dict[GGUFValueType, int] = {
    **{t: s.size for t, s in _SCALARS.items()},
    GGUFValueType.STRING: 8,
    GGUFValueType.ARRAY: 12,
}
#: Smallest metadata entry: key length, value type, a one-byte value.
MIN_KV_BYTES = 8 + 4 + 1
#: Smallest tensor info: name length, n_dims, one dimension, type, offset.
MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8


@dataclass(frozen=True)
class RawTensorInfo:
    """One tensor info entry as stored: dims innermost first, offset relative to the data."""

    name: str
    dims: tuple[int, ...]
    ggml_type: int
    offset: int
    #: Absolute byte offset of the entry's ``n_dims`` field; the dims, type and offset
    #: fields follow it (for error messages).
    fields_at: int

    def dim_at(self, index: int) -> int:
        """Absolute byte offset of ``dims[index]``."""
        return self.fields_at + 4 + 8 * index

    @property
    def type_at(self) -> int:
        return self.fields_at + 4 + 8 * len(self.dims)

    @property
    def offset_at(self) -> int:
        return self.type_at + 4


@dataclass
class RawHeader:
    """The decoded header, before the meaning of its values is checked."""

    version: int
    metadata: dict[str, object]
    #: Type of each metadata value: ``(t,)`` for scalars, ``(ARRAY, element type)`` for arrays.
    value_types: dict[str, tuple[GGUFValueType, ...]]
    #: Absolute byte offset of each metadata value.
    value_offsets: dict[str, int]
    tensor_infos: list[RawTensorInfo]
    #: Absolute offset just past the last tensor info (the data starts at the next
    #: multiple of the alignment).
    end: int
    #: Total bytes requested from the source while parsing.
    bytes_read: int


async def read_header(source: ByteSource) -> RawHeader:
    """Parse the header of the GGUF file in ``source``, reading only the header's bytes.

    Raises:
        FormatError: the header is malformed; the message names the field and its offset.
        UnsupportedError: the file is a GGUF version this parser does not read.
        SourceError: the source could not be read.
    """
    with span(Phase.HEADER, source.name) as s:
        header = await parse_header(source)
        s.nbytes = header.bytes_read
    return header


async def parse_header(source: ByteSource) -> RawHeader:
    """:func:`read_header` without reporting a ``header`` span (for a caller reporting
    its own)."""
    return await _Parser(source).parse()


class _Parser:
    """A cursor over the source with a window of buffered bytes."""

    def __init__(self, source: ByteSource) -> None:
        self.source = source
        self.size = source.size
        self.pos = 0
        self.bytes_read = 0
        self._buf = b""
        self._base = 0
        self._window = INITIAL_WINDOW

    # -- errors ---------------------------------------------------------------------------

    def fail(self, field: str, offset: int, problem: str) -> FormatError:
        return FormatError(f"{self.source.name}: {field} at byte {offset}: {problem}")

    def left(self) -> int:
        """Bytes of the source after the cursor."""
        return self.size - self.pos

    # -- buffered reading -----------------------------------------------------------------

    async def need(self, n: int, field: str) -> None:
        """Make ``[pos, pos + n)`` available in the window, or fail naming ``field``."""
        if self.pos + n > MAX_HEADER_BYTES:
            raise self.fail(
                field, self.pos, f"the header would be longer than {MAX_HEADER_BYTES} bytes"
            )
        if self.pos + n <= self._base + len(self._buf):
            return
        if n > self.left():
            raise self.fail(field, self.pos, f"needs {n} bytes, {self.left()} left in the file")
        length = min(self.left(), max(n, self._window))
        self._buf = await self.source.read(self.pos, length)
        self._base = self.pos
        self.bytes_read += length
        self._window = min(self._window * 2, MAX_WINDOW)

    async def scalar(self, fmt: struct.Struct, field: str) -> int | float:
        await self.need(fmt.size, field)
        value: int | float = fmt.unpack_from(self._buf, self.pos - self._base)[0]
        self.pos += fmt.size
        return value

    async def u32(self, field: str) -> int:
        return int(await self.scalar(_U32, field))

    async def u64(self, field: str) -> int:
        return int(await self.scalar(_U64, field))

    async def string(self, field: str) -> str:
        at = self.pos
        n = await self.u64(f"{field} length")
        if n > self.left():
            raise self.fail(
                f"{field} length", at, f"{n} bytes do not fit in the {self.left()} bytes left"
            )
        if n > MAX_STRING_BYTES:
            raise self.fail(
                f"{field} length",
                at,
                f"{n} bytes: longer than a string may be ({MAX_STRING_BYTES})",
            )
        await self.need(n, field)
        start = self.pos - self._base
        try:
            text = self._buf[start : start + n].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(field, self.pos + exc.start, "invalid UTF-8") from exc
        self.pos += n
        return text

    async def value_type(self, field: str) -> GGUFValueType:
        at = self.pos
        raw = await self.u32(field)
        try:
            return GGUFValueType(raw)
        except ValueError:
            raise self.fail(field, at, f"unknown value type {raw}") from None

    # -- values ---------------------------------------------------------------------------

    async def scalar_value(self, vtype: GGUFValueType, field: str) -> object:
        """A string, number or bool (not an array)."""
        if vtype == GGUFValueType.STRING:
            return await self.string(field)
        at = self.pos
        value = await self.scalar(_SCALARS[vtype], field)
        if vtype == GGUFValueType.BOOL:
            if value not in (0, 1):
                raise self.fail(field, at, f"bool byte is {value}, expected 0 or 1")
            return bool(value)
        return value

    async def array(self, field: str, depth: int) -> tuple[object, GGUFValueType]:
        """An array value and its element type."""
        if depth > MAX_ARRAY_DEPTH:
            raise self.fail(field, self.pos, f"arrays nested deeper than {MAX_ARRAY_DEPTH}")
        etype = await self.value_type(f"{field} element type")
        at = self.pos
        count = await self.u64(f"{field} length")
        least = count * _MIN_SIZE[etype]
        if least > self.left():
            raise self.fail(
                f"{field} length",
                at,
                f"{count} {etype.name} elements need at least {least} bytes, "
                f"{self.left()} left in the file",
            )
        if etype == GGUFValueType.STRING:
            return await self.string_array(count, field), etype
        if etype == GGUFValueType.ARRAY:
            items = [(await self.array(f"{field}[{i}]", depth + 1))[0] for i in range(count)]
            return items, etype
        dtype = _ARRAY_DTYPES[etype]
        await self.need(least, field)
        arr = np.frombuffer(self._buf, dtype, count, self.pos - self._base)
        if etype == GGUFValueType.BOOL:
            bad = np.flatnonzero(arr > 1)
            if bad.size:
                i = int(bad[0])
                raise self.fail(f"{field}[{i}]", self.pos + i, "bool byte is not 0 or 1")
            out = arr.astype(np.bool_)
        else:
            out = arr.astype(dtype.newbyteorder("="))
        self.pos += least
        return out, etype

    async def string_array(self, count: int, field: str) -> list[str]:
        """``count`` strings, decoded in tight loops over the window (262k in ~0.1 s)."""
        out: list[str] = []
        unpack = _U64.unpack_from
        while True:
            buf, base = self._buf, self._base
            p, end = self.pos - base, len(buf)
            try:
                while len(out) < count and p + 8 <= end:
                    n = unpack(buf, p)[0]
                    if p + 8 + n > end:
                        break
                    out.append(buf[p + 8 : p + 8 + n].decode("utf-8"))
                    p += 8 + n
            except UnicodeDecodeError as exc:
                raise self.fail(
                    f"{field}[{len(out)}]", base + p + 8 + exc.start, "invalid UTF-8"
                ) from exc
            self.pos = base + p
            if len(out) == count:
                return out
            # The next string runs past the window: check it fits in the file, then refill.
            item = f"{field}[{len(out)}]"
            at = self.pos
            await self.need(8, f"{item} length")
            n = unpack(self._buf, at - self._base)[0]
            if n > self.left() - 8:
                raise self.fail(
                    f"{item} length",
                    at,
                    f"{n} bytes do not fit in the {self.left() - 8} bytes left",
                )
            if n > MAX_STRING_BYTES:
                raise self.fail(
                    f"{item} length",
                    at,
                    f"{n} bytes: longer than a string may be ({MAX_STRING_BYTES})",
                )
            await self.need(8 + n, item)

    # -- the header -----------------------------------------------------------------------

    async def check_magic(self) -> None:
        """Read the magic; a file that is not GGUF is named by its format when the first
        bytes tell it (:mod:`pullweights.filetypes`): safetensors, ONNX, a checkpoint..."""
        try:
            magic = await self.u32("magic")
        except FormatError as exc:  # under 4 bytes
            what = "the file is empty (an interrupted download?)" if not self.size else "too short"
            raise FormatError(f"{exc}: {what}, not a GGUF file ({GGUF_ONLY})") from None
        if magic == GGUF_MAGIC:
            return
        foreign = describe_foreign(self._buf[:64], self.source.name)
        if foreign is not None:
            raise UnsupportedError(foreign)
        raise self.fail(
            "magic",
            0,
            f"0x{magic:08x} is not the GGUF magic 0x{GGUF_MAGIC:08x}: not a GGUF file "
            f"({GGUF_ONLY})",
        )

    async def parse(self) -> RawHeader:
        await self.check_magic()
        version = await self.u32("version")
        if version not in SUPPORTED_VERSIONS:
            swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
            hint = " (a big-endian file)" if swapped in SUPPORTED_VERSIONS else ""
            raise UnsupportedError(
                f"{self.source.name}: version at byte 4: GGUF version {version}{hint} is not "
                f"supported; supported: {', '.join(map(str, SUPPORTED_VERSIONS))}"
            )
        n_tensors = await self.u64("tensor count")
        n_kv = await self.u64("metadata key count")
        if n_tensors * MIN_TENSOR_INFO_BYTES > self.left():
            raise self.fail(
                "tensor count",
                8,
                f"{n_tensors} tensor infos need at least {n_tensors * MIN_TENSOR_INFO_BYTES} "
                f"bytes, the file has {self.left()} after the counts",
            )
        if n_kv * MIN_KV_BYTES + n_tensors * MIN_TENSOR_INFO_BYTES > self.left():
            raise self.fail(
                "metadata key count",
                16,
                f"{n_kv} metadata entries and {n_tensors} tensor infos need at least "
                f"{n_kv * MIN_KV_BYTES + n_tensors * MIN_TENSOR_INFO_BYTES} bytes, "
                f"the file has {self.left()} after the counts",
            )
        header = RawHeader(version, {}, {}, {}, [], 0, 0)
        for i in range(n_kv):
            await self.metadata_entry(i, header)
        seen: set[str] = set()
        for i in range(n_tensors):
            info = await self.tensor_info(i)
            if info.name in seen:
                raise self.fail(
                    f"tensor #{i} name", info.fields_at, f"duplicate tensor name {info.name!r}"
                )
            seen.add(info.name)
            header.tensor_infos.append(info)
        header.end = self.pos
        header.bytes_read = self.bytes_read
        return header

    async def metadata_entry(self, i: int, header: RawHeader) -> None:
        at = self.pos
        key = await self.string(f"metadata key #{i} string")
        if not key:
            raise self.fail(f"metadata key #{i} string", at, "empty key")
        if key in header.metadata:
            raise self.fail(f"metadata key #{i} string", at, f"duplicate key {key!r}")
        field = f"metadata key #{i} {key!r}"
        vtype = await self.value_type(f"{field} value type")
        header.value_offsets[key] = self.pos
        if vtype == GGUFValueType.ARRAY:
            value, etype = await self.array(f"{field} value", 1)
            header.value_types[key] = (vtype, etype)
        else:
            value = await self.scalar_value(vtype, f"{field} value")
            header.value_types[key] = (vtype,)
        header.metadata[key] = value

    async def tensor_info(self, i: int) -> RawTensorInfo:
        name = await self.string(f"tensor #{i} name")
        if not name:
            raise self.fail(f"tensor #{i} name", self.pos - 8, "empty tensor name")
        fields_at = self.pos
        n_dims = await self.u32(f"tensor {name!r} n_dims")
        if not 1 <= n_dims <= MAX_DIMS:
            raise self.fail(
                f"tensor {name!r} n_dims", fields_at, f"{n_dims} is not in 1..{MAX_DIMS}"
            )
        dims = tuple([await self.u64(f"tensor {name!r} dims[{j}]") for j in range(n_dims)])
        ggml_type = await self.u32(f"tensor {name!r} type")
        offset = await self.u64(f"tensor {name!r} offset")
        return RawTensorInfo(name, dims, ggml_type, offset, fields_at)
