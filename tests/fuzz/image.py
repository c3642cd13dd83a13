"""A GGUF file as editable parts: metadata entries (key, type, value), tensor infos and the
data region, read with pullweights' own reader and written back byte for byte.

The fuzzer edits an :class:`Image` (a metadata value, a tensor's shape...) and writes it
with :meth:`Image.write`; values may be given types or sizes no valid file has, since
the point is to see what the loaders make of them.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf.constants import GGUFValueType

from pullweights.gguf import GGUFFile
from pullweights.sources import ConcatSource, FileSource

V = GGUFValueType

SCALAR_FORMATS: dict[int, str] = {
    V.UINT8: "<B",
    V.INT8: "<b",
    V.UINT16: "<H",
    V.INT16: "<h",
    V.UINT32: "<I",
    V.INT32: "<i",
    V.FLOAT32: "<f",
    V.BOOL: "<?",
    V.UINT64: "<Q",
    V.INT64: "<q",
    V.FLOAT64: "<d",
}


@dataclass
class Entry:
    """One metadata entry. ``etype`` is the element type of an array."""

    key: str
    vtype: int
    value: object
    etype: int | None = None


@dataclass
class TensorInfo:
    name: str
    dims: list[int]  # innermost first, as stored
    ggml_type: int
    offset: int  # relative to the data region


@dataclass
class Image:
    """Editable parts of one GGUF file (version 3, little-endian)."""

    entries: list[Entry]
    tensors: list[TensorInfo]
    data: bytes | None  # None: the data region is a hole of ``data_size`` bytes
    data_size: int
    alignment: int = 32
    #: Extra raw edits applied to the written bytes: (offset, bytes).
    patches: list[tuple[int, bytes]] = field(default_factory=list)
    #: Cut the written file to this many bytes.
    truncate: int | None = None

    def entry(self, key: str) -> Entry | None:
        return next((e for e in self.entries if e.key == key), None)

    def header(self) -> bytes:
        out = [b"GGUF", struct.pack("<IQQ", 3, len(self.tensors), len(self.entries))]
        for e in self.entries:
            out.append(
                _string(e.key) + struct.pack("<I", e.vtype) + _value(e.vtype, e.value, e.etype)
            )
        for t in self.tensors:
            out.append(_string(t.name) + struct.pack("<I", len(t.dims)))
            out.append(b"".join(struct.pack("<Q", d & (2**64 - 1)) for d in t.dims))
            out.append(struct.pack("<IQ", t.ggml_type & 0xFFFFFFFF, t.offset & (2**64 - 1)))
        head = b"".join(out)
        return head + b"\0" * (-len(head) % self.alignment)

    def write(self, path: Path) -> Path:
        """Write the file; a data hole becomes a sparse region (no disk used)."""
        head = bytearray(self.header())
        with open(path, "wb") as f:
            f.write(head)
            if self.data is not None:
                f.write(self.data)
            else:
                f.truncate(len(head) + self.data_size)
            for offset, patch in self.patches:
                f.seek(offset)
                f.write(patch)
            if self.truncate is not None:
                f.truncate(self.truncate)
        return path


def _string(text: str | bytes) -> bytes:
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def _value(vtype: int, value: object, etype: int | None) -> bytes:
    if vtype == V.STRING:
        return _string(value if isinstance(value, (str, bytes)) else str(value))
    if vtype == V.ARRAY:
        assert etype is not None
        items = list(value) if not isinstance(value, np.ndarray) else value
        if etype in SCALAR_FORMATS and isinstance(items, np.ndarray):
            arr = items.astype(np.dtype(SCALAR_FORMATS[etype]), copy=False)
            return struct.pack("<IQ", etype, len(arr)) + arr.tobytes()
        body = b"".join(_value(etype, item, None) for item in items)
        return struct.pack("<IQ", etype, len(items)) + body
    fmt = SCALAR_FORMATS[vtype]
    if fmt in ("<f", "<d"):
        with np.errstate(over="ignore"):  # 1e308 as float32 is inf
            return np.array(float(value), dtype="<f4" if fmt == "<f" else "<f8").tobytes()  # type: ignore[arg-type]
    if fmt == "<?":
        return struct.pack("<B", int(bool(value)))
    bits = struct.calcsize(fmt) * 8
    number = int(value) & ((1 << bits) - 1)  # type: ignore[call-overload]
    return struct.pack(fmt.upper() if fmt[-1].islower() else fmt, number)


def read_image(paths: list[Path], *, keep_data: bool) -> Image:
    """The parts of the GGUF stored in ``paths`` (one file, or part files in order).

    With ``keep_data`` false the data region is not read (written back as a hole)."""

    async def read() -> Image:
        source = FileSource(paths[0]) if len(paths) == 1 else ConcatSource.from_paths(paths)
        async with source:
            gguf = await GGUFFile.open(source)
            entries = []
            for key, value in gguf.metadata.items():
                types = gguf.value_types[key]
                if types[0] == V.ARRAY and types[1] == V.ARRAY:
                    continue  # nested arrays: none in the seed models
                etype = types[1] if types[0] == V.ARRAY else None
                entries.append(Entry(key, types[0], value, etype))
            tensors = [
                TensorInfo(
                    t.name, list(reversed(t.shape)), int(t.ggml_type), t.offset - gguf.data_offset
                )
                for t in gguf.tensors.values()
            ]
            size = source.size - gguf.data_offset
            data = await source.read(gguf.data_offset, size) if keep_data else None
            return Image(entries, tensors, data, size, gguf.alignment)

    return asyncio.run(read())
