"""Staged graphs: the same results as one session, stage boundaries where marked or cut."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loaders import load_model
from pullweights import Dim, GraphBuilder, GraphError, TensorDescriptor, create_context
from pullweights.graph.lowering import lower
from pullweights.graph.stages import StageSpan, partition
from tests.reference import write_tiny_model

ARCHS = [("llama", "Q4_K"), ("qwen2", "Q8_0"), ("gemma3", "mixed")]


@pytest.mark.parametrize(("arch", "quant"), ARCHS, ids=[f"{a}-{q}" for a, q in ARCHS])
async def test_staged_and_single_session_give_the_same_logits(
    arch: str, quant: str, tmp_path: Path
) -> None:
    """Cut into one session, one per marked layer, and 3 stages by bytes: logits of a
    prompt and then of token-by-token decoding agree to 1e-5 (relative to the largest
    logit; onnxruntime fuses across what is one session but not across stages)."""
    path = write_tiny_model(tmp_path / "m.gguf", arch, quant=quant)  # type: ignore[arg-type]
    prompt = [1, 5, 9, 3, 7, 2]
    results = {}
    for plan in (1, "marked", 3):
        ctx = create_context("low-power", cache_dir=tmp_path / "cache")
        model = await load_model(str(path), context=ctx, context_length=32, stages=plan)
        steps = [await model.forward(prompt, all_logits=True)]
        for token in (4, 8, 6):
            steps.append(await model.forward([token]))
        results[plan] = (np.concatenate(steps), len(model.graph.stages))
    single, n_single = results[1]
    assert n_single == 1
    assert results["marked"][1] == model.config.n_layers + 2  # embedding, layers, head
    assert results[3][1] == 3
    scale = np.abs(single).max()
    for plan in ("marked", 3):
        np.testing.assert_allclose(results[plan][0], single, rtol=0, atol=1e-5 * scale)


def test_partition_cuts_by_prepacked_bytes_and_marks() -> None:
    units = [0, 1, 1, 2, 2, 2, 3]
    costs = [0, 5, 5, 4, 0, 4, 0]
    names = {0: "", 1: "a", 2: "b", 3: "c"}
    assert partition(units, costs, names, 1) == [StageSpan("a .. c", 0, 7)]
    assert partition(units, costs, names, "marked") == [
        StageSpan("a", 0, 3),
        StageSpan("b", 3, 6),
        StageSpan("c", 6, 7),
    ]
    two = partition(units, costs, names, 2)
    assert [(s.start, s.stop) for s in two] == [(0, 3), (3, 7)]
    # a unit over the target is cut between its costly nodes
    big = partition([1, 1, 1, 1], [4, 4, 4, 4], {1: "head"}, 4)
    assert [(s.start, s.stop) for s in big] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert [s.name for s in big] == ["head 1/4", "head 2/4", "head 3/4", "head 4/4"]
    with pytest.raises(GraphError, match="stages must be"):
        partition(units, costs, names, 0)


async def test_values_cross_stages_and_outputs_stay_where_made(tmp_path: Path) -> None:
    """A value made in stage 1 and read in stage 3 is handed on; a graph input read by
    several stages reaches each; each output comes from the stage that makes it."""
    ctx = create_context("low-power", cache_dir=None)
    b = GraphBuilder(ctx)
    n = Dim("n", 1, 8)
    x = b.input("x", TensorDescriptor("float32", [n]))
    y = b.input("y", TensorDescriptor("float32", [n]))
    with b.stage("one"):
        a = b.add(x, y)
    with b.stage("two"):
        m = b.mul(a, x)
    with b.stage("three"):
        z = b.sub(m, a)
    lowered = lower(b, {"a": a, "z": z}, stages="marked")
    one, two, three = lowered.stages
    made_in_two = two.model.graph.node[0].output[0]
    assert set(one.outputs) == {"a", a.name} and list(one.inputs) == ["x", "y"]
    assert set(two.links_in) == {a.name} and set(two.inputs) == {a.name, "x"}
    assert set(three.links_in) == {a.name, made_in_two} and list(three.outputs) == ["z"]
    graph = await ctx.compile(lowered)
    xs, ys = np.array([1, 2, 3], np.float32), np.array([4, 5, 6], np.float32)
    out = await graph.compute({"x": xs, "y": ys})
    np.testing.assert_array_equal(out["a"], xs + ys)
    np.testing.assert_array_equal(out["z"], (xs + ys) * xs - (xs + ys))
    assert list(out) == ["a", "z"]


async def test_a_cold_load_pulls_the_largest_stages_first(tmp_path: Path) -> None:
    """However the stages' first steps finish, weights are admitted stage by stage, most
    packed bytes first (graph order among equals): the transforms of each stage's weights
    begin before those of the stage two places later in that order (two CPUs pull at
    once)."""
    from pullweights.events import Event, Phase, subscribed

    # a vocabulary large enough that the head packs more than a layer
    path = write_tiny_model(tmp_path / "m.gguf", "llama", quant="Q4_K", n_layers=4, vocab_size=8192)
    seen: list[Event] = []
    with subscribed(seen.append):
        ctx = create_context("low-power", cache_dir=tmp_path / "cache")
        model = await load_model(str(path), context=ctx, context_length=32, stages="marked")
    stages = [s.lowered for s in model.graph.stages]
    order = [s.name for s in sorted(stages, key=lambda s: -s.prepacked_bytes)]
    assert order != [s.name for s in stages]  # the head packs most: not graph order
    first: dict[str, int] = {}
    for i, e in enumerate(seen):
        if e.phase == Phase.TRANSFORM and e.kind == "begin" and e.stage in order:
            first.setdefault(e.stage, i)
    began = [first[name] for name in order if name in first]
    assert len(began) >= 3, first
    assert all(a < c for a, c in zip(began, began[2:], strict=False)), (order, first)
