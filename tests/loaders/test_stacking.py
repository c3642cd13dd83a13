"""Stacked Q/K/V matmuls in real loads: the same model, one cache model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loaders import load_model
from pullweights import create_context
from tests.reference import write_tiny_model

CASES = [("qwen2", "Q8_0", False), ("llama", "Q4_K", True), ("gemma3", "Q5_1", True)]


@pytest.mark.parametrize(
    ("arch", "quant", "name_order"),
    CASES,
    ids=[f"{a}-{q}" + ("-name-order" if o else "") for a, q, o in CASES],
)
async def test_stacked_and_separate_matmuls_give_the_same_logits(
    arch: str, quant: str, name_order: bool, tmp_path: Path
) -> None:
    """A prompt and three decode steps with every block's Q/K/V stacked, and
    with one matmul per weight: the logits are equal bit for bit (the same rows, the
    same int8 activations, biases folded into the kernel as for one weight; Q4_K's min
    term over the stacked mins). The stacked entries are cached under the file's model:
    ``cache list`` shows one model holding them, and removing it leaves the cache empty.
    In a file written in name order a stack's tensors are apart (slices of the file), in
    block order back to back."""
    path = write_tiny_model(tmp_path / "m.gguf", arch, quant=quant, name_order=name_order)  # type: ignore[arg-type]
    ctx = create_context("low-power", cache_dir=tmp_path / "cache")
    results = {}
    for stack in (True, False):
        model = await load_model(str(path), context=ctx, context_length=32, stack_weights=stack)
        steps = [await model.forward([1, 5, 9, 3, 7, 2], all_logits=True)]
        for token in (4, 8, 6):
            steps.append(await model.forward([token]))
        results[stack] = np.concatenate(steps)
        if stack:
            stacked_model = model
    np.testing.assert_array_equal(results[True], results[False])
    cache = ctx.cache
    assert cache is not None
    labels = {e.label for e in cache.entries() if e.kind == "weights"}
    stacked = {label for label in labels if "+" in label}
    layers = model.config.n_layers
    assert {label.split(".")[2] for label in stacked} == {"attn_q"}
    assert len(stacked) == layers, sorted(stacked)
    declared = {
        ref.payload.label
        for stage in stacked_model.graph.stages
        for refs in (stage.lowered.bound_weights, stage.lowered.initializer_weights)
        for ref in refs.values()
    }
    biases = {label for label in declared if "+" in label and label.endswith(".bias")}
    assert len(biases) == (layers if arch == "qwen2" else 0), sorted(biases)  # Q/K/V biases
    [listed] = cache.models()
    claimed = {e.label for e in listed.entries}
    assert stacked <= claimed
    cache.remove_model(listed.name)
    assert cache.models() == [] and [e for e in cache.entries() if e.kind == "weights"] == []
