"""A mapped weight file that changes after ``build()``: truncated or rewritten in place it
gives one SourceError before the next compute touches the map (not a SIGBUS that kills
the interpreter, not other weights); replaced by a rename it keeps computing with the
bytes that were loaded.

Each scenario runs in a child interpreter, so that a regression (a SIGBUS) fails the test
instead of killing the test run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pullweights import FileSource, SourceError
from pullweights.sources.file import mapped_file_checks

ROOT = Path(__file__).resolve().parents[2]
N = 1 << 18  # 1 MiB of float32 weights: many pages past any truncation point

CHANGES = ("truncate", "rewrite", "replace", "none")

SCRIPT = """
import asyncio, json, os, shutil, sys
import numpy as np
import pullweights as pw

N = {n}

async def scenario(path, change):
    src = pw.FileSource(path)
    ref = pw.raw_weight(src, 0, "float32", (N,))
    b = pw.GraphBuilder(pw.create_context(cache_dir=None))
    x = b.input("x", pw.TensorDescriptor("float32", [N]))
    graph = await b.build({{"y": b.add(x, b.input("w", ref.descriptor, weight=ref))}})
    src.close()  # as load_model closes its file: the graph's views keep the map
    ones = np.ones(N, np.float32)
    before = (await graph.compute({{"x": ones}}))["y"]
    if change == "truncate":
        os.truncate(path, 4096)
    elif change == "rewrite":
        with open(path, "r+b") as f:
            f.write(np.full(16, 7.0, np.float32).tobytes())
    elif change == "replace":
        shutil.copy(path, path + ".new")
        with open(path + ".new", "r+b") as f:
            f.write(np.full(16, 7.0, np.float32).tobytes())
        os.replace(path + ".new", path)
    try:
        after = (await graph.compute({{"x": ones}}))["y"]
    except pw.SourceError as exc:
        return "SourceError: " + str(exc)
    return "same" if np.array_equal(before, after) else "different"

async def main():
    out = {{}}
    for path, change in zip(sys.argv[1::2], sys.argv[2::2]):
        out[change] = await scenario(path, change)
    print(json.dumps(out))

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What the second compute gave after each change, from one child interpreter."""
    root = tmp_path_factory.mktemp("mapped")
    args: list[str] = []
    for change in CHANGES:
        path = root / f"{change}.bin"
        np.arange(N, dtype=np.float32).tofile(path)
        args += [str(path), change]
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(n=N), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    # A SIGBUS would show here as returncode -7.
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    found: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


def test_truncated_file_is_an_error_not_a_crash(outcomes: dict[str, str]) -> None:
    out = outcomes["truncate"]
    assert out.startswith("SourceError:"), out
    assert f"was truncated from {4 * N} to 4096 bytes" in out


def test_file_written_in_place_is_an_error(outcomes: dict[str, str]) -> None:
    out = outcomes["rewrite"]
    assert out.startswith("SourceError:") and "was modified" in out, out


def test_file_replaced_by_rename_keeps_the_loaded_bytes(outcomes: dict[str, str]) -> None:
    assert outcomes["replace"] == "same"


def test_unchanged_file_computes_again(outcomes: dict[str, str]) -> None:
    assert outcomes["none"] == "same"


async def test_change_before_a_pull_is_caught_by_map(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(bytes(8192))
    source = FileSource(path)
    try:
        assert len(source.map(0, 8192) or b"") == 8192
        os.truncate(path, 100)
        with pytest.raises(SourceError, match="truncated from 8192 to 100 bytes"):
            source.map(0, 8192)
        with pytest.raises(SourceError, match="truncated"):
            await source.read(0, 16)
    finally:
        source.close()
    source.check_unchanged()  # closed: nothing left to check


def test_checks_are_collected_once_per_file_through_parts(tmp_path: Path) -> None:
    from pullweights import ConcatSource, MemorySource

    paths = []
    for i in range(3):
        paths.append(tmp_path / f"part{i}")
        paths[-1].write_bytes(bytes(64))
    concat = ConcatSource.from_paths(paths)
    try:
        checks = mapped_file_checks([concat, concat, MemorySource(b"x"), concat.parts[0]])
        assert len(checks) == 3
        for check in checks:
            check()
        paths[1].write_bytes(bytes(32))
        with pytest.raises(SourceError, match="part1"):
            for check in checks:
                check()
    finally:
        for part in concat.parts:
            part.close()  # type: ignore[attr-defined]


def test_a_file_that_cannot_be_mapped_closes_only_its_own_descriptor(tmp_path: Path) -> None:
    import gc

    keep = tmp_path / "keep"
    keep.write_bytes(b"abc")
    with pytest.raises(SourceError, match="cannot map") as info:
        FileSource(tmp_path)  # a directory opens but does not map; its traceback keeps it
    fd = os.open(keep, os.O_RDONLY)  # very likely the number the failed source just closed
    try:
        del info
        gc.collect()  # the failed source goes: it must not close that number again
        assert os.read(fd, 3) == b"abc"
    finally:
        os.close(fd)
