"""``inspect``'s layout column says what a load builds, and ``pull`` agrees with it: one
table of plain GGUF types (:mod:`pullweights.gguf.plain`) decides for both."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFWriter

from tests.reference import write_tiny_model

from .runner import assert_one_line_error, cli


def _write(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    w = GGUFWriter(path, arch="custom")  # no loader: pull caches each tensor as inspect says
    for name, arr in tensors.items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _layouts(inspected: str) -> dict[str, str]:
    rows = inspected.split("\n\n")[-1].splitlines()[1:]
    return {row.split()[0]: row.split(maxsplit=4)[4] for row in rows}


def test_an_i64_tensor_is_a_view_that_pull_takes(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "ints.gguf",
        {"positions": np.arange(64, dtype=np.int64), "scale": np.ones(64, np.float32)},
    )
    done = cli("inspect", str(path))
    assert done.returncode == 0, done.stderr
    assert _layouts(done.stdout) == {"positions": "view i64", "scale": "view f32"}
    pulled = cli("pull", str(path), "--cache-dir", str(tmp_path / "cache"), "--no-progress")
    assert pulled.returncode == 0, pulled.stderr  # it used to refuse what inspect called a view
    assert "pulled 2 tensors" in pulled.stderr


def test_an_i16_tensor_is_unsupported_in_both(tmp_path: Path) -> None:
    path = _write(tmp_path / "i16.gguf", {"codes": np.arange(64, dtype=np.int16)})
    done = cli("inspect", str(path))
    assert done.returncode == 0, done.stderr
    assert _layouts(done.stdout) == {"codes": "unsupported I16"}
    pulled = cli("pull", str(path), "--cache-dir", str(tmp_path / "cache"), "--no-progress")
    assert pulled.returncode == 1
    assert_one_line_error(pulled.stderr, "I16")


def test_embeddings_show_the_gather_and_unpack_the_loaders_build(tmp_path: Path) -> None:
    tied = write_tiny_model(tmp_path / "tied.gguf", "llama", quant="Q4_K", tie_embeddings=True)
    f16 = write_tiny_model(tmp_path / "f16.gguf", "qwen2", quant="F16")
    layouts = _layouts(cli("inspect", str(tied)).stdout)
    assert layouts["token_embd.weight"] == (
        "MatMulNBits 4-bit b32 + mins (exact); Gather + unpack 4-bit b32 + mins (exact)"
    )
    assert layouts["blk.0.attn_norm.weight"] == "view f32"
    layouts = _layouts(cli("inspect", str(f16)).stdout)
    assert layouts["token_embd.weight"] == "dequant f32"  # F16 matrices become float32
    assert layouts["blk.0.ffn_up.weight"] == "dequant f32"
