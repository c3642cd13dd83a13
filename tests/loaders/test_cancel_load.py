"""A cancelled ``load_model`` returns only after its tokenizer build has stopped too."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import loaders.plan
from loaders import load_model
from pullweights import create_context
from pullweights.events import Event, Phase, subscribed
from tests.reference import write_tiny_model


async def test_cancelling_during_the_tokenizer_build_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = loaders.plan.Tokenizer.from_gguf_metadata

    def slow(*args: object, **kwargs: object) -> object:
        time.sleep(0.5)  # a large vocabulary
        return build(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loaders.plan.Tokenizer, "from_gguf_metadata", slow)
    path = write_tiny_model(tmp_path / "m.gguf", "llama", quant="Q8_0")
    loop = asyncio.get_running_loop()
    seen: list[Event] = []
    started = asyncio.Event()

    def watch(event: Event) -> None:
        seen.append(event)
        if event.phase == Phase.TOKENIZER and event.kind == "begin":
            loop.call_soon_threadsafe(started.set)

    with subscribed(watch):
        ctx = create_context("low-power", cache_dir=tmp_path / "cache")
        task = asyncio.ensure_future(load_model(str(path), context=ctx, context_length=32))
        await asyncio.wait_for(started.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        ended = [e for e in seen if e.phase == Phase.TOKENIZER and e.kind == "end"]
    assert ended, "the tokenizer build was still running after the load was cancelled"
