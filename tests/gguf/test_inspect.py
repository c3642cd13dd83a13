"""``pullweights inspect``: summary, metadata and tensor table of a GGUF file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from gguf import GGUFReader

from pullweights.cli import inspect

from .gguf_files import write_sample

TOKENS = [f"t{i}" for i in range(40)]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pullweights")
    inspect.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "sample.gguf"
    write_sample(path, tokens=TOKENS, extra_string="x" * 500)
    return path


async def test_text(sample: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await inspect.run(parse(["inspect", str(sample)])) == 0
    out = capsys.readouterr().out
    assert "version 3, alignment 32" in out
    assert "architecture  testarch" in out
    assert "[40 strings]" in out
    assert "… (500 chars)" in out
    for t in GGUFReader(sample).tensors:
        row = next(line for line in out.splitlines() if line.startswith(t.name + " "))
        shape = "x".join(str(d) for d in reversed(t.shape.tolist()))
        assert t.tensor_type.name in row and shape in row and f"{t.n_bytes:,}" in row


async def test_full_metadata(sample: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await inspect.run(parse(["inspect", "--metadata", str(sample)])) == 0
    out = capsys.readouterr().out
    assert "['t0', 't1', 't2', 't3', 't4', 't5', 't6', 't7', … (32 more)]" in out
    assert "x" * 500 in out


async def test_json_over_parts(sample: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = sample.read_bytes()
    parts = [sample.with_suffix(".p0"), sample.with_suffix(".p1")]
    parts[0].write_bytes(data[:1000])
    parts[1].write_bytes(data[1000:])
    assert await inspect.run(parse(["inspect", "--json", *map(str, parts)])) == 0
    doc = json.loads(capsys.readouterr().out)
    ref = GGUFReader(sample)
    assert doc["parts"] == 2
    assert doc["size"] == len(data)
    assert doc["architecture"] == "testarch"
    assert doc["metadata"]["tokenizer.ggml.tokens"] == {"length": 40, "element_type": "strings"}
    assert doc["metadata"]["t.u64s"] == [1, 2**64 - 1]
    assert [t["name"] for t in doc["tensors"]] == [t.name for t in ref.tensors]
    for ours, theirs in zip(doc["tensors"], ref.tensors, strict=True):
        assert ours["shape"] == list(reversed(theirs.shape.tolist()))
        assert ours["offset"] == theirs.data_offset
        assert ours["bytes"] == theirs.n_bytes
        assert isinstance(ours["layout"], str)
