"""Tiny GGUF files for tests: whole files via ``gguf.GGUFWriter``, raw headers via ``struct``."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType
from gguf.quants import quantize

Q = GGMLQuantizationType
V = GGUFValueType

# (key, value, value type, element type) written by write_sample and checked by tests.
NESTED_INTS = [[1, 2], [3, 4, 5], [6]]
NESTED_STRINGS = [["a", "bé"], ["c"]]


def write_sample(
    path: Path,
    *,
    big_rows: int = 128,
    tokens: Sequence[str] = ("<pad>", "héllo", "wörld", "", "▁the", "日本"),
    alignment: int | None = None,
    extra_string: str | None = None,
    nested: bool = True,
) -> dict[str, np.ndarray]:
    """A GGUF with every metadata value type (arrays of arrays unless not ``nested``) and
    F32/F16/Q8_0/Q4_K tensors of odd shapes.

    Returns the arrays written (numpy shape, raw bytes for quantized types). The last tensor
    is an F32 of ``big_rows x 1024`` so the file has far more data than header.
    """
    rng = np.random.default_rng(0)
    w = GGUFWriter(path, arch="testarch")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4_000_000_000)
    w.add_int32("t.i32", -2_000_000_000)
    w.add_float32("t.f32", 1.5)
    w.add_uint64("t.u64", 2**63 + 5)
    w.add_int64("t.i64", -(2**62))
    w.add_float64("t.f64", 1e-300)
    w.add_bool("t.true", True)
    w.add_bool("t.false", False)
    w.add_string("t.str", "grüße ✓")
    if extra_string is not None:
        w.add_string("t.long_str", extra_string)
    w.add_array("tokenizer.ggml.tokens", list(tokens))
    w.add_array("t.ints", [1, -2, 3])
    w.add_array("t.floats", [0.5, -1.25])
    w.add_array("t.bools", [True, False, True])
    w.add_key_value("t.u64s", [1, 2**64 - 1], V.ARRAY, sub_type=V.UINT64)
    w.add_key_value("t.u8s", [0, 255], V.ARRAY, sub_type=V.UINT8)
    if nested:
        w.add_array("t.nested", NESTED_INTS)
        w.add_array("t.nested_str", NESTED_STRINGS)
    arrays: dict[str, np.ndarray] = {
        "f32.odd": rng.standard_normal((3, 5)).astype(np.float32),
        "f16.vec": rng.standard_normal(7).astype(np.float16),
        "f32.3d": rng.standard_normal((2, 3, 5)).astype(np.float32),
        "q8.w": quantize(rng.standard_normal((3, 64)).astype(np.float32), Q.Q8_0),
        "q4k.w": rng.integers(0, 256, (3, 2 * GGML_QUANT_SIZES[Q.Q4_K][1]), dtype=np.uint8),
        "f32.big": rng.standard_normal((big_rows, 1024)).astype(np.float32),
    }
    for name, arr in arrays.items():
        raw = Q.Q8_0 if name.startswith("q8") else Q.Q4_K if name.startswith("q4k") else None
        w.add_tensor(name, arr, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return arrays


# -- raw headers ------------------------------------------------------------------------------


def gstr(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    """One metadata entry: key, value type, already packed value."""
    return gstr(key) + struct.pack("<I", vtype) + payload


def kv_u32(key: str, value: int) -> bytes:
    return kv(key, V.UINT32, struct.pack("<I", value))


def tensor_info(name: str | bytes, dims: Sequence[int], ggml_type: int, offset: int) -> bytes:
    """One tensor info entry; ``dims`` innermost first, as stored."""
    out = gstr(name) + struct.pack("<I", len(dims))
    out += b"".join(struct.pack("<Q", d) for d in dims)
    return out + struct.pack("<IQ", ggml_type, offset)


@dataclass
class RawFile:
    """A GGUF assembled field by field, with the offset of every part for assertions."""

    kvs: list[bytes] = field(default_factory=list)
    infos: list[bytes] = field(default_factory=list)
    data: bytes = b""
    version: int = 3
    magic: bytes = b"GGUF"
    n_tensors: int | None = None
    n_kv: int | None = None
    alignment: int = 32

    def kv_offset(self, index: int) -> int:
        """Absolute offset of metadata entry ``index``."""
        return 24 + sum(len(k) for k in self.kvs[:index])

    def info_offset(self, index: int) -> int:
        """Absolute offset of tensor info ``index``."""
        return self.kv_offset(len(self.kvs)) + sum(len(t) for t in self.infos[:index])

    @property
    def header_end(self) -> int:
        return self.info_offset(len(self.infos))

    def build(self) -> bytes:
        n_tensors = len(self.infos) if self.n_tensors is None else self.n_tensors
        n_kv = len(self.kvs) if self.n_kv is None else self.n_kv
        head = self.magic + struct.pack("<IQQ", self.version, n_tensors, n_kv)
        head += b"".join(self.kvs) + b"".join(self.infos)
        pad = -len(head) % self.alignment
        return head + b"\0" * pad + self.data


# -- split GGUF files (llama.cpp's gguf-split layout) -----------------------------------------


def write_split(source: Path, prefix: Path, max_tensors: int) -> list[Path]:
    """Rewrite the GGUF ``source`` as split shards ``<prefix>-0000k-of-0000n.gguf``.

    The ``gguf`` writer itself splits (``split_max_tensors``): every shard gets the
    ``split.*`` keys, the first the metadata. Returns the shard paths in order.
    """
    reader = GGUFReader(source)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    arch = str(reader.fields["general.architecture"].contents())
    writer = GGUFWriter(prefix.with_suffix(".gguf"), arch, split_max_tensors=max_tensors)
    for key, fld in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        types = [GGUFValueType(t) for t in fld.types]
        sub = types[1] if types[0] == V.ARRAY else None
        writer.add_key_value(key, fld.contents(), types[0], sub_type=sub)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    count = -(-len(reader.tensors) // max_tensors)
    return [
        prefix.with_name(f"{prefix.name}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)
    ]
