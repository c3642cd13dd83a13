"""Non-GGUF files and directories named by their format, with the fix (pullweights.filetypes)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from onnx import TensorProto, helper

from pullweights.filetypes import GGUF_ONLY, describe_directory, describe_foreign


def safetensors_bytes() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * 8


def onnx_bytes() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    return bytes(helper.make_model(graph, producer_name="test").SerializeToString())


@pytest.mark.parametrize(
    ("head", "found", "fix"),
    [
        (safetensors_bytes(), "a safetensors file", "convert_hf_to_gguf.py"),
        (onnx_bytes(), "an ONNX model", "run an ONNX file with onnxruntime"),
        (b"PK\x03\x04" + b"\0" * 30, "a zip archive", "convert_hf_to_gguf.py"),
        (b"\x80\x04\x95" + b"\0" * 30, "a Python pickle", "convert_hf_to_gguf.py"),
        (b"tjgg\x03\0\0\0", "a legacy GGML/GGJT file", "convert_llama_ggml_to_gguf.py"),
        (b"version https://git-lfs.github.com/spec/v1\n", "a Git LFS pointer", "git lfs pull"),
        (b"<!DOCTYPE html><html>", "an HTML page", "resolve/main"),
        (b"\x1f\x8b\x08\0", "a gzip-compressed file", "gunzip"),
    ],
    ids=lambda v: v.split()[1] if isinstance(v, str) and v.startswith("a") else "",
)
def test_known_formats_are_named_with_the_fix(head: bytes, found: str, fix: str) -> None:
    message = describe_foreign(head, "m.bin")
    assert message is not None
    assert message.startswith(f"m.bin is {found}")
    assert f", not a GGUF file. {GGUF_ONLY}: " in message
    assert fix in message


def test_unknown_bytes_are_not_guessed() -> None:
    assert describe_foreign(b"GGUX\x03\0\0\0", "m.bin") is None
    assert describe_foreign(b"", "m.bin") is None


def test_directories(tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    (hf / "model.safetensors").write_bytes(safetensors_bytes())
    assert "a Hugging Face model" in describe_directory(hf)
    assert f"convert_hf_to_gguf.py {hf}" in describe_directory(hf)
    ggufs = tmp_path / "ggufs"
    ggufs.mkdir()
    (ggufs / "a.gguf").write_bytes(b"GGUF")
    assert describe_directory(ggufs).endswith(
        f"give one of the GGUF files in it: {ggufs / 'a.gguf'}"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert describe_directory(empty) == (
        f"{empty} is a directory, not a GGUF file. {GGUF_ONLY}: give the path of a .gguf file"
    )
