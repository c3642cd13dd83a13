"""The loaders build exactly the layouts ``pullweights inspect`` names.

``inspect`` names a tensor's layout from :func:`choose_transform` with the role its name
implies (:func:`tensor_role`), and marks the weights run as one stacked matmul; here every
payload the loaders declare for tiny models of each architecture and several types is
checked against that same choice.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from loaders import architecture_for
from loaders.blocks import DecoderInputs
from loaders.weights import WeightMap
from pullweights import GraphBuilder, create_context
from pullweights.cli.inspect import _layout_namer
from pullweights.gguf import open_gguf
from pullweights.gguf.layouts import choose_transform, layout_name, tensor_role
from pullweights.gguf.stacked import stacked_transform
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
        shown_as = _layout_namer(gguf)
        stacked_names = set()
        for label, payload in declared.items():
            names = label.split("+")
            if len(names) > 1:
                members = [gguf.tensor(n) for n in names]
                assert _key(payload.transform) == _key(stacked_transform(members)), label
                if all(n.endswith(".bias") for n in names):  # a stacked matmul's biases
                    assert payload.transform is None and payload.outputs["data"].rank == 1
                else:
                    stacked_names.update(names)
                continue
            tensor = gguf.tensor(label)
            chosen = choose_transform(tensor.ggml_type, tensor.shape, tensor_role(label))
            assert _key(payload.transform) == _key(chosen), label
            shown = layout_name(tensor.ggml_type, label, tensor.shape)
            assert not shown.startswith("unsupported"), (label, shown)
        shown_stacked = {n for n, t in gguf.tensors.items() if "(stacked:" in shown_as(t)}
        assert shown_stacked == stacked_names
        if quant == "Q8_0":  # every block's Q/K/V are one type: all stack
            assert len(stacked_names) == 3 * config.n_layers, sorted(stacked_names)
