"""A cold load reports every phase through pullweights.events, with times and bytes."""

from __future__ import annotations

from pathlib import Path

from loaders import SamplingParams, generate_tokens, load_model
from pullweights import create_context
from pullweights.events import Event, Phase, subscribed
from pullweights.gguf.reader import open_gguf
from tests.reference import write_tiny_model
from tests.servers.faults import FaultServer


async def test_a_cold_load_over_http_reports_every_phase(tmp_path: Path) -> None:
    path = write_tiny_model(
        tmp_path / "m.gguf",
        "qwen2",
        quant="Q8_0",
        hidden=512,
        n_heads=8,
        n_kv_heads=4,
        head_dim=64,
        n_layers=3,
        ffn=2048,
    )  # every layer stage packs more than 1 MiB: saved
    seen: list[Event] = []
    async with FaultServer(path.read_bytes()) as server:
        ctx = create_context("low-power", cache_dir=tmp_path / "cache")
        with subscribed(seen.append):
            async with await open_gguf(server.url, remote_dir=tmp_path / "cache" / "remote") as g:
                model = await load_model(g, context=ctx, context_length=32, stages="marked")
            ids = [t async for t in generate_tokens(model, [1, 2, 3], SamplingParams(max_tokens=2))]
    assert ids
    phases = {e.phase for e in seen}
    for phase in (Phase.HEADER, Phase.LOAD, Phase.FETCH, Phase.TRANSFORM, Phase.CACHE_WRITE):
        assert phase in phases, phase
    for phase in (Phase.COMPILE, Phase.SAVE, Phase.TOKENIZER, Phase.READY, Phase.PREFILL):
        assert phase in phases, phase
    assert Phase.FIRST_TOKEN in phases and Phase.GENERATE in phases
    compiled = {e.stage for e in seen if e.phase == Phase.COMPILE and e.kind == "end" and e.ok}
    assert compiled == {s.lowered.name for s in model.graph.stages}
    ends = [e for e in seen if e.kind == "end"]
    assert all(e.ok for e in ends)
    for phase in (Phase.HEADER, Phase.FETCH, Phase.TRANSFORM, Phase.CACHE_WRITE):
        assert all(e.nbytes > 0 for e in ends if e.phase == phase), phase
    # a compile's bytes are its stage's packed weights (none for the embedding stage)
    assert sum(e.nbytes for e in ends if e.phase == Phase.COMPILE) > 0
    # each span ends after it begins
    begins = {e.span: e.time for e in seen if e.kind == "begin"}
    assert all(e.time >= begins[e.span] for e in ends)
    ready = [e for e in seen if e.phase == Phase.READY]
    assert [e.name for e in ready] == ["graph", "model"]
    load = next(e for e in seen if e.phase == Phase.LOAD and e.kind == "end")
    assert load.time <= ready[0].time
