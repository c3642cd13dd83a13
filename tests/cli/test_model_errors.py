"""What is not a GGUF model, given to ``run``, ``inspect`` and ``pull``: one line naming the
format found, what pullweights reads, and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.core.test_filetypes import onnx_bytes, safetensors_bytes

from .runner import assert_one_line_error, cli


@pytest.fixture
def models(tmp_path: Path) -> dict[str, Path]:
    hf = tmp_path / "hf-model"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    (hf / "model.safetensors").write_bytes(safetensors_bytes())
    paths = {"directory": hf, "safetensors": hf / "model.safetensors"}
    paths["onnx"] = tmp_path / "model.onnx"
    paths["onnx"].write_bytes(onnx_bytes())
    paths["empty"] = tmp_path / "empty.gguf"
    paths["empty"].write_bytes(b"")
    return paths


EXPECTED = {
    "directory": ("is a directory holding a Hugging Face model", "convert_hf_to_gguf.py"),
    "safetensors": ("is a safetensors file", "convert_hf_to_gguf.py"),
    "onnx": ("is an ONNX model", "onnxruntime"),
    "empty": ("the file is empty", "not a GGUF file"),
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_run_names_the_format_and_the_fix(models: dict[str, Path], kind: str) -> None:
    done = cli("run", str(models[kind]), "Once upon a time", "--no-cache")
    assert done.returncode == 1 and done.stdout == ""
    assert_one_line_error(done.stderr, str(models[kind]), *EXPECTED[kind], "GGUF")


def test_inspect_and_pull_say_the_same(models: dict[str, Path], tmp_path: Path) -> None:
    for command in (("inspect",), ("pull", "--cache-dir", str(tmp_path / "c"))):
        done = cli(*command, str(models["safetensors"]))
        assert done.returncode == 1
        assert_one_line_error(done.stderr, *EXPECTED["safetensors"], "pullweights reads GGUF")
