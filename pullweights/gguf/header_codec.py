"""A parsed GGUF header as bytes that decode in milliseconds (for a header store).

Parsing a GGUF header decodes every vocabulary string one by one: qwen2.5-coder-0.5b's
151,936 tokens and 151,387 merges take 0.2-0.5 s here, before anything else of a load
can start. :func:`encode_header` writes a :class:`~pullweights.gguf.header.RawHeader` as
one JSON document (scalars, types, offsets, tensor infos) followed by a binary blob:
numeric arrays as their bytes, each string array as its strings joined by NUL, so
decoding is one ``bytes.decode`` and one ``str.split`` per array (~10 ms for qwen's two).

Only what the parser produces is encoded; a header this format cannot hold exactly (an
array of arrays, a string holding a NUL) is not encoded (None), and is parsed from the
file each time. Decoding checks the layout it reads and raises :class:`ValueError` for
anything malformed; what the values mean is checked again by
:class:`~pullweights.gguf.reader.GGUFFile`, as for a header parsed from a file.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
from gguf.constants import GGUFValueType

from pullweights.gguf.header import RawHeader, RawTensorInfo

__all__ = ["decode_header", "encode_header"]

#: First bytes of an encoded header (the last digit is the format version).
MAGIC = b"PWGGUFH1"
_LENGTH = struct.Struct("<Q")
_ALIGN = 8


def _encode_value(value: object, blob: bytearray) -> Any | None:
    """The JSON form of one metadata value (its bulk appended to ``blob``), None if the
    format cannot hold it exactly."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.ndarray):
        blob.extend(b"\0" * (-len(blob) % _ALIGN))
        at = len(blob)
        blob.extend(np.ascontiguousarray(value).tobytes())
        return {"array": value.dtype.str, "at": at, "count": int(value.size)}
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        text = "\0".join(value)
        if value and text.count("\0") != len(value) - 1:
            return None  # a string holds a NUL: the join cannot be split back
        data = text.encode("utf-8")
        at = len(blob)
        blob.extend(data)
        return {"strings": at, "nbytes": len(data), "count": len(value)}
    return None


def encode_header(header: RawHeader) -> bytes | None:
    """``header`` in this module's format, or None if it cannot be held exactly."""
    blob = bytearray()
    metadata: dict[str, Any] = {}
    for key, value in header.metadata.items():
        encoded = _encode_value(value, blob)
        if encoded is None:
            return None
        metadata[key] = encoded
    doc = {
        "version": header.version,
        "metadata": metadata,
        "types": {k: [int(t) for t in v] for k, v in header.value_types.items()},
        "offsets": header.value_offsets,
        "tensors": [
            [t.name, list(t.dims), t.ggml_type, t.offset, t.fields_at] for t in header.tensor_infos
        ],
        "end": header.end,
        "bytes_read": header.bytes_read,
    }
    text = json.dumps(doc, separators=(",", ":"), allow_nan=True).encode()
    return MAGIC + _LENGTH.pack(len(text)) + text + bytes(blob)


def _decode_value(value: Any, blob: memoryview) -> object:
    if isinstance(value, (bool, int, float, str)):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"unexpected metadata value {value!r:.60}")
    if "array" in value:
        dtype = np.dtype(value["array"])
        if dtype.kind not in "biuf":
            raise ValueError(f"unexpected array dtype {dtype}")
        at, count = int(value["at"]), int(value["count"])
        if at < 0 or count < 0 or at + count * dtype.itemsize > len(blob):
            raise ValueError("an array runs past the end of the data")
        return np.frombuffer(blob, dtype, count, at).copy()
    at, nbytes, count = int(value["strings"]), int(value["nbytes"]), int(value["count"])
    if at < 0 or nbytes < 0 or at + nbytes > len(blob):
        raise ValueError("a string array runs past the end of the data")
    if count == 0:
        return []
    strings = bytes(blob[at : at + nbytes]).decode("utf-8").split("\0")
    if len(strings) != count:
        raise ValueError(f"a string array holds {len(strings)} strings, expected {count}")
    return strings


def decode_header(data: bytes) -> RawHeader:
    """The header :func:`encode_header` wrote.

    Raises:
        ValueError: ``data`` is not in this format, or is malformed.
    """
    if data[: len(MAGIC)] != MAGIC or len(data) < len(MAGIC) + _LENGTH.size:
        raise ValueError("not an encoded GGUF header")
    start = len(MAGIC) + _LENGTH.size
    (length,) = _LENGTH.unpack_from(data, len(MAGIC))
    if start + length > len(data):
        raise ValueError("the document runs past the end of the data")
    try:
        doc = json.loads(data[start : start + length])
        blob = memoryview(data)[start + length :]
        metadata = {str(k): _decode_value(v, blob) for k, v in doc["metadata"].items()}
        types = {str(k): tuple(GGUFValueType(t) for t in v) for k, v in doc["types"].items()}
        tensors = [
            RawTensorInfo(str(name), tuple(int(d) for d in dims), int(t), int(off), int(at))
            for name, dims, t, off, at in doc["tensors"]
        ]
        header = RawHeader(
            int(doc["version"]),
            metadata,
            types,
            {str(k): int(v) for k, v in doc["offsets"].items()},
            tensors,
            int(doc["end"]),
            int(doc["bytes_read"]),
        )
    except (KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"malformed encoded GGUF header: {exc!r}") from exc
    if set(metadata) != set(types) or set(metadata) != set(header.value_offsets):
        raise ValueError("metadata, types and offsets name different keys")
    return header
