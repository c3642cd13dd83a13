"""Malformed and hostile GGUF headers: one typed error naming the field and its byte offset."""

from __future__ import annotations

import random
import struct
import tracemalloc
from pathlib import Path

import pytest
from gguf.constants import GGMLQuantizationType, GGUFValueType

from pullweights.errors import FormatError, UnsupportedError
from pullweights.gguf import GGUFFile
from pullweights.gguf.header import MAX_ARRAY_DEPTH
from pullweights.sources import MemorySource

from .gguf_files import RawFile, gstr, kv, kv_u32, tensor_info, write_sample

Q = GGMLQuantizationType
V = GGUFValueType
NAME = "hostile.gguf"


def base(n_tensors: int = 1) -> RawFile:
    """A valid file: one metadata entry and ``n_tensors`` F32 tensors of 8 elements."""
    rf = RawFile(kvs=[kv("general.architecture", V.STRING, gstr("test"))])
    rf.infos = [tensor_info(f"w{i}", [8], Q.F32, 32 * i) for i in range(n_tensors)]
    rf.data = bytes(32 * n_tensors)
    return rf


async def open_bytes(data: bytes) -> GGUFFile:
    return await GGUFFile.open(MemorySource(data, name=NAME))


async def expect(data: bytes, *fragments: str, error: type[Exception] = FormatError) -> str:
    with pytest.raises(error) as info:
        await open_bytes(data)
    message = str(info.value)
    assert type(info.value) is error, message
    assert message.startswith(NAME + ": "), message
    for fragment in fragments:
        assert fragment in message, message
    return message


async def test_base_is_valid() -> None:
    gguf = await open_bytes(base(2).build())
    assert list(gguf.tensors) == ["w0", "w1"]
    assert gguf.tensors["w1"].offset == gguf.data_offset + 32


async def test_magic() -> None:
    rf = base()
    rf.magic = b"GGUX"
    await expect(rf.build(), "magic at byte 0")


@pytest.mark.parametrize("version", [0, 1, 4, 0x03000000])
async def test_version(version: int) -> None:
    rf = base()
    rf.version = version
    message = await expect(rf.build(), "version at byte 4", error=UnsupportedError)
    assert ("big-endian" in message) == (version == 0x03000000)


async def test_version_2_reads() -> None:
    rf = base()
    rf.version = 2
    assert (await open_bytes(rf.build())).version == 2


@pytest.mark.parametrize(
    ("n_tensors", "n_kv", "field"),
    [
        (2**63, 1, "tensor count at byte 8"),
        (10, 1, "tensor count at byte 8"),
        (1, 2**64 - 1, "metadata key count at byte 16"),
        (1, 30, "metadata key count at byte 16"),
    ],
)
async def test_counts_bounded_by_file_size(n_tensors: int, n_kv: int, field: str) -> None:
    rf = base()
    rf.n_tensors, rf.n_kv = n_tensors, n_kv
    tracemalloc.start()
    try:
        await expect(rf.build(), field, "need at least")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


async def test_key_string_length_beyond_file() -> None:
    rf = base()
    rf.kvs[0] = struct.pack("<Q", 2**60) + b"general.architecture"
    await expect(rf.build(), "metadata key #0 string length at byte 24", "do not fit")


async def test_value_string_length_beyond_file() -> None:
    rf = base()
    rf.kvs.append(kv("k", V.STRING, struct.pack("<Q", 10**6) + b"x"))
    at = rf.kv_offset(1) + len(gstr("k")) + 4
    await expect(rf.build(), f"metadata key #1 'k' value length at byte {at}")


async def test_array_length_beyond_file() -> None:
    rf = base()
    rf.kvs.append(kv("k", V.ARRAY, struct.pack("<IQ", V.UINT32, 10**9)))
    at = rf.kv_offset(1) + len(gstr("k")) + 4 + 4
    await expect(rf.build(), f"metadata key #1 'k' value length at byte {at}", "UINT32")


async def test_string_array_element_length_beyond_file() -> None:
    rf = base()
    items = gstr("ok") + struct.pack("<Q", 2**40) + b"xx"
    rf.kvs.append(kv("k", V.ARRAY, struct.pack("<IQ", V.STRING, 2) + items))
    at = rf.kv_offset(1) + len(gstr("k")) + 4 + 12 + len(gstr("ok"))
    await expect(rf.build(), f"metadata key #1 'k' value[1] length at byte {at}")


async def test_unknown_value_types() -> None:
    rf = base()
    rf.kvs.append(kv("k", 13, b"\0" * 8))
    at = rf.kv_offset(1) + len(gstr("k"))
    await expect(
        rf.build(), f"metadata key #1 'k' value type at byte {at}", "unknown value type 13"
    )
    rf.kvs[1] = kv("k", V.ARRAY, struct.pack("<IQ", 99, 1))
    await expect(rf.build(), f"'k' value element type at byte {at + 4}", "unknown value type 99")


@pytest.mark.parametrize("depth", [MAX_ARRAY_DEPTH, MAX_ARRAY_DEPTH + 1])
async def test_nested_array_depth(depth: int) -> None:
    rf = base()
    # ``depth`` arrays inside one another, the innermost holding one uint8.
    payload = struct.pack("<IQ", V.ARRAY, 1) * (depth - 1) + struct.pack("<IQB", V.UINT8, 1, 7)
    rf.kvs.append(kv("k", V.ARRAY, payload))
    if depth <= MAX_ARRAY_DEPTH:
        value = (await open_bytes(rf.build())).metadata["k"]
        for _ in range(depth - 1):
            assert isinstance(value, list)
            value = value[0]
        assert value.tolist() == [7]  # type: ignore[attr-defined]
    else:
        await expect(rf.build(), "metadata key #1 'k' value", f"nested deeper than {depth - 1}")


@pytest.mark.parametrize("dims", [[], [1, 1, 1, 1, 1]])
async def test_n_dims(dims: list[int]) -> None:
    rf = base()
    rf.infos = [tensor_info("w", dims, Q.F32, 0)]
    at = rf.info_offset(0) + len(gstr("w"))
    await expect(rf.build(), f"tensor 'w' n_dims at byte {at}", f"{len(dims)} is not in 1..4")


async def test_zero_dimension() -> None:
    rf = base()
    rf.infos = [tensor_info("w", [8, 0], Q.F32, 0)]
    at = rf.info_offset(0) + len(gstr("w")) + 4 + 8
    await expect(rf.build(), f"tensor 'w' dims[1] at byte {at}", "dimension is 0")


@pytest.mark.parametrize(
    ("dims", "index"), [([2**20, 2**20, 2**21], 2), ([2**64 - 1], 0), ([2**61, 1, 2], 0)]
)
async def test_dimension_product_overflow(dims: list[int], index: int) -> None:
    rf = base()
    rf.infos = [tensor_info("w", dims, Q.F32, 0)]
    at = rf.info_offset(0) + len(gstr("w")) + 4 + 8 * index
    await expect(rf.build(), f"tensor 'w' dims[{index}] at byte {at}", "over 2**62 bytes")


async def test_block_size_multiple() -> None:
    rf = base()
    rf.infos = [tensor_info("w", [33, 1], Q.Q8_0, 0)]
    rf.data = bytes(64)
    at = rf.info_offset(0) + len(gstr("w")) + 4
    await expect(rf.build(), f"tensor 'w' dims[0] at byte {at}", "Q8_0 block size 32")


@pytest.mark.parametrize("ggml_type", [4, 99, 2**32 - 1])
async def test_unknown_ggml_type(ggml_type: int) -> None:
    rf = base()
    rf.infos = [tensor_info("w", [8], ggml_type, 0)]
    at = rf.info_offset(0) + len(gstr("w")) + 4 + 8
    await expect(
        rf.build(), f"tensor 'w' type at byte {at}", str(ggml_type), error=UnsupportedError
    )


async def test_data_outside_file() -> None:
    rf = base()
    rf.infos = [tensor_info("w", [8], Q.F32, 32)]
    at = rf.info_offset(0) + len(gstr("w")) + 4 + 8 + 4
    await expect(rf.build(), f"tensor 'w' offset at byte {at}", "outside the")


async def test_data_section_past_end() -> None:
    rf = base()
    data = rf.build()[: rf.header_end]
    assert rf.header_end % 32
    await expect(data, f"tensor data at byte {rf.header_end}", "past the end")


async def test_unaligned_offset() -> None:
    rf = base()
    rf.infos = [tensor_info("w", [4], Q.F32, 16)]
    at = rf.info_offset(0) + len(gstr("w")) + 4 + 8 + 4
    await expect(rf.build(), f"tensor 'w' offset at byte {at}", "multiple of the alignment 32")


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (kv_u32("general.alignment", 0), "not a power of two"),
        (kv_u32("general.alignment", 48), "not a power of two"),
        (kv("general.alignment", V.UINT64, struct.pack("<Q", 32)), "expected UINT32"),
        (kv("general.alignment", V.STRING, gstr("32")), "expected UINT32"),
    ],
)
async def test_bad_alignment(entry: bytes, problem: str) -> None:
    rf = base()
    rf.kvs.append(entry)
    at = rf.kv_offset(1) + len(gstr("general.alignment")) + 4
    await expect(rf.build(), f"general.alignment at byte {at}", problem)


async def test_duplicates() -> None:
    rf = base()
    rf.kvs.append(rf.kvs[0])
    await expect(rf.build(), f"metadata key #1 string at byte {rf.kv_offset(1)}", "duplicate key")
    rf = base(2)
    rf.infos[1] = tensor_info("w0", [8], Q.F32, 32)
    await expect(rf.build(), "tensor #1 name", "duplicate tensor name 'w0'")


async def test_overlapping_tensors() -> None:
    rf = base(2)
    rf.infos[0] = tensor_info("w0", [16], Q.F32, 0)  # 64 bytes: runs into w1 at 32
    at = rf.info_offset(1) + len(gstr("w1")) + 4 + 8 + 4
    await expect(rf.build(), f"tensor 'w1' offset at byte {at}", "overlaps tensor 'w0'")


async def test_invalid_utf8() -> None:
    rf = base()
    rf.kvs.append(kv(b"k\xff", V.UINT8, b"\x01"))
    await expect(rf.build(), f"metadata key #1 string at byte {rf.kv_offset(1) + 9}", "UTF-8")
    rf = base()
    rf.kvs.append(kv("k", V.STRING, gstr(b"ab\xc3")))
    at = rf.kv_offset(1) + len(gstr("k")) + 4 + 8 + 2
    await expect(rf.build(), f"metadata key #1 'k' value at byte {at}", "invalid UTF-8")
    rf = base()
    items = gstr("ok") + gstr(b"\xe6\x97")
    rf.kvs.append(kv("k", V.ARRAY, struct.pack("<IQ", V.STRING, 2) + items))
    at = rf.kv_offset(1) + len(gstr("k")) + 4 + 12 + len(gstr("ok")) + 8
    await expect(rf.build(), f"metadata key #1 'k' value[1] at byte {at}", "UTF-8")
    rf = base()
    rf.infos = [tensor_info(b"w\x80", [8], Q.F32, 0)]
    await expect(rf.build(), f"tensor #0 name at byte {rf.info_offset(0) + 9}", "UTF-8")


async def test_bools_must_be_0_or_1() -> None:
    rf = base()
    rf.kvs.append(kv("k", V.BOOL, b"\x02"))
    await expect(rf.build(), "metadata key #1 'k' value at byte", "bool byte is 2")
    rf = base()
    rf.kvs.append(kv("k", V.ARRAY, struct.pack("<IQ", V.BOOL, 3) + b"\x01\x00\x05"))
    await expect(rf.build(), "metadata key #1 'k' value[2] at byte", "not 0 or 1")


async def test_empty_names() -> None:
    rf = base()
    rf.kvs.append(kv("", V.UINT8, b"\x01"))
    await expect(rf.build(), "metadata key #1 string", "empty key")
    rf = base()
    rf.infos = [tensor_info("", [8], Q.F32, 0)]
    await expect(rf.build(), "tensor #0 name", "empty tensor name")


async def test_truncated_anywhere() -> None:
    rf = base(2)
    data = rf.build()
    for cut in range(len(data)):
        message = await expect(data[:cut], "at byte")
        assert any(s in message for s in ("left", "need at least", "past the end", "outside")), (
            message
        )


@pytest.mark.timeout(120)
async def test_fuzzed_headers_fail_cleanly(tmp_path: Path) -> None:
    """Random damage to a header: a typed error (or a still-valid file), within bounded memory."""
    path = tmp_path / "fuzz.gguf"
    write_sample(path, big_rows=1)
    pristine = path.read_bytes()
    header_end = (await open_bytes(pristine)).data_offset
    assert len(pristine) < 64 * 1024
    rng = random.Random(1234)
    outcomes = {"ok": 0, "FormatError": 0, "UnsupportedError": 0}
    peak = 0
    tracemalloc.start()
    try:
        for _ in range(300):
            data = bytearray(pristine)
            mode = rng.random()
            if mode < 0.6:
                for _ in range(rng.randint(1, 4)):
                    data[rng.randrange(header_end)] ^= 1 << rng.randrange(8)
            elif mode < 0.85:
                at = rng.randrange(header_end - 8)
                data[at : at + 8] = rng.choice([b"\xff" * 8, rng.randbytes(8), b"\0" * 8])
            else:
                del data[rng.randrange(header_end) :]
            tracemalloc.reset_peak()
            try:
                await open_bytes(bytes(data))
                outcomes["ok"] += 1
            except (FormatError, UnsupportedError) as exc:
                outcomes[type(exc).__name__] += 1
            peak = max(peak, tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()
    assert outcomes["FormatError"] > 100, outcomes
    assert peak < 2 << 20, peak


@pytest.mark.parametrize("in_array", [False, True])
async def test_string_longer_than_the_limit_is_not_read(in_array: bool) -> None:
    from pullweights.gguf.header import MAX_STRING_BYTES

    rf = base()
    n = MAX_STRING_BYTES + 1
    if in_array:
        rf.kvs.append(kv("k", V.ARRAY, struct.pack("<IQ", V.STRING, 1) + struct.pack("<Q", n)))
    else:
        rf.kvs.append(kv("k", V.STRING, struct.pack("<Q", n)))
    data = rf.build() + bytes(n)  # the string's bytes fit in the file
    tracemalloc.start()
    try:
        await expect(data, "'k' value", f"{n} bytes: longer than a string may be")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # the 16 MiB string was never read


async def test_header_longer_than_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import pullweights.gguf.header as header

    rf = base()
    limit = rf.header_end + 20
    monkeypatch.setattr(header, "MAX_HEADER_BYTES", limit)
    await open_bytes(rf.build())  # within the limit
    rf.kvs.append(kv("k", V.STRING, gstr("x" * 100)))
    await expect(rf.build(), "'k' value", f"the header would be longer than {limit} bytes")
