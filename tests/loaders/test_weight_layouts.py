"""The loaders build exactly the layouts ``pullweights inspect`` names.

``inspect`` names a tensor's layout from :func:`choose_transform` with the role its name
implies (:func:`tensor_role`); here every payload the loaders declare for tiny models of
each architecture and several types is checked against that same choice.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from loaders import architecture_for
from loaders.blocks import DecoderInputs
from loaders.weights import WeightMap
from pullweights import GraphBuilder, create_context
from pullweights.gguf import open_gguf
from pullweights.gguf.layouts import choose_transform, layout_name, tensor_role
from tests.reference import write_tiny_model

CASES = [
    ("gemma3", "Q8_0", {}),
    ("gemma3", "F16", {}),
    ("llama", "mixed", {"tie_embeddings": True}),
    ("qwen2", "BF16", {}),
    ("qwen2", None, {}),
]


def _key(transform: object) -> tuple[str, str] | None:
    if transform is None:
        return None
    return type(transform).__name__, str(transform.params)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("arch", "quant", "overrides"), CASES, ids=lambda c: str(c))
async def test_loaders_use_the_layout_inspect_names(
    tmp_path: Path, arch: str, quant: str | None, overrides: dict[str, object]
) -> None:
    path = write_tiny_model(tmp_path / "m.gguf", arch, quant=quant, **overrides)  # type: ignore[arg-type]
    async with await open_gguf(path) as gguf:
        architecture = architecture_for(gguf.architecture)
        config = architecture.config(gguf.metadata, gguf.tensor("token_embd.weight").shape[0])
        builder = GraphBuilder(create_context(cache_dir=None))
        weights = WeightMap(builder, gguf)
        architecture.build(builder, weights, DecoderInputs.declare(builder, config, 64))
        declared = {p.label: p for p in weights.payloads}
        assert declared, "the loaders declared no weights"
        for name, payload in declared.items():
            tensor = gguf.tensor(name)
            chosen = choose_transform(tensor.ggml_type, tensor.shape, tensor_role(name))
            assert _key(payload.transform) == _key(chosen), name
            shown = layout_name(tensor.ggml_type, name, tensor.shape)
            assert not shown.startswith("unsupported"), (name, shown)
