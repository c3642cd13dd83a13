"""``load_model(on_plan=...)``: the plan comes after the header and before any weight is
pulled; its token bound never undercounts; the tokenizer it builds is the load's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loaders import LoadPlan, load_model
from loaders.plan import encode_with
from pullweights.errors import GraphError
from pullweights.events import Event, Phase, subscribed
from pullweights.runtime.context import create_context
from tests.reference import write_tiny_model

PROMPTS = [
    "Hello world",
    "  leading and trailing spaces  ",
    "naïve café, 日本語のテキスト, emoji 🙂🙂",
    "<start_of_turn>user\nnot parsed as special<end_of_turn>",
    "x",
    "\n\n\n",
    "word " * 50,
]


class Stop(Exception):
    pass


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
async def test_the_plan_comes_before_any_weight(tmp_path: Path, arch: str) -> None:
    path = write_tiny_model(tmp_path / "m.gguf", arch, quant="Q8_0")  # type: ignore[arg-type]
    events: list[Event] = []
    seen: list[LoadPlan] = []

    async def check(plan: LoadPlan) -> None:
        seen.append(plan)
        for prompt in PROMPTS:
            for chat in (False, True):
                ids = await plan.encode(prompt, chat=chat)
                assert plan.token_bound(prompt, chat=chat) >= len(ids), (prompt, chat)
        raise Stop

    with subscribed(events.append), pytest.raises(Stop):
        await load_model(path, context=create_context(cache_dir=None), on_plan=check)
    (plan,) = seen
    assert plan.config.arch == arch and plan.context_length == plan.config.train_context == 256
    phases = {e.phase for e in events}
    assert Phase.LOAD not in phases and Phase.FETCH not in phases  # nothing was pulled
    assert [e.kind for e in events if e.phase == Phase.TOKENIZER] == ["begin", "end"]


async def test_saved_sessions_start_opening_only_once_the_plan_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import loaders.model

    path = write_tiny_model(tmp_path / "m.gguf", "qwen2", quant="Q8_0")
    started: list[str] = []
    start = loaders.model.SessionPrefetch.start

    def record(context: Any, plan_key: str) -> Any:
        started.append(plan_key)
        return start(context, plan_key)

    monkeypatch.setattr(loaders.model.SessionPrefetch, "start", record)

    async def refuse(plan: LoadPlan) -> None:
        raise Stop

    with pytest.raises(Stop):
        await load_model(path, context=create_context(cache_dir=tmp_path), on_plan=refuse)
    assert started == []
    await load_model(path, context=create_context(cache_dir=tmp_path), on_plan=lambda p: None)
    (key,) = started
    assert key.startswith("qwen2|") and str(path) in key
    await load_model(
        path, context=create_context(cache_dir=tmp_path), stages=1, prefetch_sessions=False
    )
    assert len(started) == 1


async def test_the_tokenizer_is_built_once(tmp_path: Path) -> None:
    path = write_tiny_model(tmp_path / "m.gguf", "qwen2", quant="Q8_0")
    events: list[Event] = []

    async def check(plan: LoadPlan) -> None:
        await plan.encode("Paris is")

    with subscribed(events.append):
        model = await load_model(
            path, context=create_context(cache_dir=None), context_length=100_000, on_plan=check
        )
    assert sum(1 for e in events if e.phase == Phase.TOKENIZER and e.kind == "begin") == 1
    assert model.context == 256
    assert encode_with(model.tokenizer, model.metadata, "Paris is") == model.tokenizer.encode(
        "Paris is", parse_special=False
    )


async def test_context_capped_and_zero(tmp_path: Path) -> None:
    path = write_tiny_model(tmp_path / "m.gguf", "gemma3", quant="Q8_0")
    plans: list[LoadPlan] = []

    def keep(plan: LoadPlan) -> Any:
        plans.append(plan)
        raise Stop

    for length in (None, 100, 100_000):
        with pytest.raises(Stop):
            await load_model(path, context_length=length, on_plan=keep)
    assert [(p.context_length, p.context_capped) for p in plans] == [
        (256, False),
        (100, False),
        (256, True),
    ]
    with pytest.raises(GraphError, match="context_length must be >= 1, got 0"):
        await load_model(path, context_length=0, on_plan=keep)


@pytest.mark.model
def test_the_bound_holds_for_the_real_tokenizers(
    model_metadata: dict[str, dict[str, object]],
    model_tokenizers: dict[str, Any],
    llamacpp_expected: dict[str, Any],
) -> None:
    for key, meta in model_metadata.items():
        from loaders import architecture_for

        config = architecture_for(str(meta["general.architecture"])).config(meta, 1)
        plan = LoadPlan(config, 4096, None, meta)
        tokenizer = model_tokenizers[key]
        for case in llamacpp_expected["models"][key]["cases"]:
            if not case["text"]:
                continue  # no tokens: an error, not a count
            for chat in (False, True):
                ids = encode_with(tokenizer, meta, case["text"], chat=chat)
                assert plan.token_bound(case["text"], chat=chat) >= len(ids), case["text"]
