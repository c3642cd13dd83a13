"""``pullweights export``: plain onnxruntime on the exported model gives pullweights' logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from loaders import load_model
from pullweights import create_context
from pullweights.errors import PullWeightsError, UnsupportedError
from pullweights.export import export_model
from tests.reference import write_tiny_model

CONTEXT = 64
PROMPT = np.array([1, 5, 9, 20, 33, 7, 2], np.int64)


def _plain_ort_logits(path: Path) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    n = len(PROMPT)
    feeds = {
        "input_ids": PROMPT,
        "logits_index": np.arange(n, dtype=np.int64),
        "seqlens_k": np.array([n - 1], np.int32),
        "total_sequence_length": np.array(n, np.int32),
    }
    for arg in session.get_inputs():
        if arg.name.startswith("past_"):
            shape = [d if isinstance(d, int) else CONTEXT for d in arg.shape]
            feeds[arg.name] = np.zeros(shape, np.float32)
    (logits,) = session.run(["logits"], feeds)
    return np.asarray(logits)


@pytest.mark.parametrize(("arch", "quant"), [("gemma3", "Q8_0"), ("llama", "mixed")])
@pytest.mark.parametrize("external", [False, True])
async def test_exported_model_matches_pullweights(
    tmp_path: Path, arch: str, quant: str, external: bool
) -> None:
    gguf = write_tiny_model(tmp_path / "m.gguf", arch, quant=quant)  # type: ignore[arg-type]
    written = await export_model(
        gguf, tmp_path / "m.onnx", external_data=external, context_length=CONTEXT
    )
    assert [p.name for p in written] == (["m.onnx", "m.onnx.data"] if external else ["m.onnx"])
    proto = onnx.load(str(written[0]), load_external_data=False)
    external_tensors = [t for t in proto.graph.initializer if t.data_location == 1]
    assert bool(external_tensors) == external
    model = await load_model(gguf, context=create_context(cache_dir=None), context_length=CONTEXT)
    # Every weight is an initializer now: the only inputs are the decoder's step inputs.
    names = [i.name for i in proto.graph.input]
    assert {n for n in names if not n.startswith("past_")} == {
        "input_ids", "logits_index", "seqlens_k", "total_sequence_length"
    }  # fmt: skip
    assert len([n for n in names if n.startswith("past_")]) == 2 * model.config.n_layers
    expected = await model.forward(PROMPT, all_logits=True)
    got = _plain_ort_logits(written[0])
    # The same graph and weights in the same onnxruntime: equal up to float reordering.
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * float(np.abs(expected).max()))


async def test_too_large_to_embed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = write_tiny_model(tmp_path / "m.gguf", "qwen2", quant="Q8_0")
    monkeypatch.setattr("pullweights.export.EMBED_LIMIT", 1000)
    with pytest.raises(UnsupportedError, match="--external-data"):
        await export_model(gguf, tmp_path / "m.onnx")


async def test_unwritable_output_is_one_error_and_leaves_nothing(tmp_path: Path) -> None:
    gguf = write_tiny_model(tmp_path / "m.gguf", "qwen2", quant="Q8_0")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(PullWeightsError, match="export: cannot write"):
        await export_model(gguf, blocker / "m.onnx", external_data=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "m.gguf"]
