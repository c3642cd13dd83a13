"""Part files in the wrong order, missing or extra are refused from the header, naming the fix,
before any tensor byte is read."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pullweights.errors import FormatError
from pullweights.gguf import open_gguf
from tests.gguf.gguf_files import write_sample


@pytest.fixture
def parts(tmp_path: Path) -> list[Path]:
    """A sample GGUF cut in four, named without numbers (so only the header can tell).

    The first cut falls inside the header, so the header spans the first two parts.
    """
    whole = tmp_path / "sample.gguf"
    write_sample(whole, big_rows=256)
    data = whole.read_bytes()
    cuts = [0, 100, len(data) // 2, 3 * len(data) // 4, len(data)]
    names = ["alpha", "bravo", "charlie", "delta"]
    paths = []
    for name, start, stop in zip(names, cuts, cuts[1:], strict=False):
        path = tmp_path / f"{name}.bin"
        path.write_bytes(data[start:stop])
        paths.append(path)
    return paths


async def test_in_order_they_open(parts: list[Path]) -> None:
    async with await open_gguf(parts) as gguf:
        big = gguf.tensor("f32.big")
        data = np.frombuffer(await gguf.source.read(big.offset, big.nbytes), np.float32)
        assert data.shape == (256 * 1024,) and np.isfinite(data).all()


async def test_first_part_out_of_place(parts: list[Path]) -> None:
    with pytest.raises(FormatError) as caught:
        await open_gguf([parts[1], parts[0], parts[2], parts[3]])
    message = str(caught.value)
    assert "the part files are out of order" in message
    assert f"{parts[0]} (given as part 2) starts the GGUF file" in message
    assert f"Give {parts[0]} first" in message


async def test_a_part_in_the_header_out_of_place(parts: list[Path]) -> None:
    with pytest.raises(FormatError, match=r"if a part is missing, repeated or out of order"):
        await open_gguf([parts[0], parts[2], parts[1], parts[3]])


async def test_a_missing_part(parts: list[Path]) -> None:
    with pytest.raises(FormatError, match=r"lies outside the .*give every part, in order"):
        await open_gguf(parts[:3])


async def test_an_extra_part(parts: list[Path], tmp_path: Path) -> None:
    extra = tmp_path / "echo.bin"
    shutil.copy(parts[3], extra)
    with pytest.raises(FormatError) as caught:
        await open_gguf([*parts, extra])
    message = str(caught.value)
    assert "bytes too many" in message and "give every part, in order" in message
    assert f"{extra.stat().st_size} bytes too many" in message
