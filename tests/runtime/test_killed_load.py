"""A cold load killed (SIGKILL) in any phase leaves a cache that verifies, and the next
run completes with the same greedy output as a load that was never interrupted."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pullweights.cache import WeightCache
from pullweights.events import ENV_EVENTS
from tests.reference import write_tiny_model

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    import pullweights as pw
    from loaders import generate_tokens, load_model, SamplingParams

    async def main(path, cache_dir):
        ctx = pw.create_context("low-power", cache_dir=cache_dir)
        model = await load_model(path, context=ctx, context_length=64, stages="marked")
        ids = [t async for t in generate_tokens(model, [1, 4, 9, 2], SamplingParams(max_tokens=8))]
        print("tokens", *ids, flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def _run(script: Path, model: Path, cache: Path, events: Path | None = None):  # type: ignore[no-untyped-def]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    if events is not None:
        env[ENV_EVENTS] = str(events)
    return await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(model), str(cache), stdout=asyncio.subprocess.PIPE, env=env
    )


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["transform", "compile", "save"])
async def test_killed_cold_load_recovers(tmp_path: Path, phase: str) -> None:
    model = write_tiny_model(
        tmp_path / "m.gguf",
        "qwen2",
        quant="Q8_0",
        hidden=512,
        n_layers=4,
        n_heads=8,
        n_kv_heads=4,
        head_dim=64,
        ffn=2048,
    )
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    fresh = await _run(script, model, tmp_path / "fresh-cache")
    out, _ = await asyncio.wait_for(fresh.communicate(), 120)
    assert fresh.returncode == 0
    expected = out.decode().strip()

    cache = tmp_path / "cache"
    events = tmp_path / "events.jsonl"
    child = await _run(script, model, cache, events)
    deadline = time.monotonic() + 60
    killed = False
    while time.monotonic() < deadline and child.returncode is None:
        if events.exists():
            seen = [json.loads(line) for line in events.read_text().splitlines() if line.strip()]
            # the second stage's span of this phase: some work published, some not
            starts = [e for e in seen if e["phase"] == phase and e["kind"] == "begin"]
            if len({e["stage"] for e in starts}) >= 2:
                child.send_signal(signal.SIGKILL)
                killed = True
                break
        await asyncio.sleep(0.002)
    await child.wait()
    if not killed:
        pytest.skip(f"the load finished before a second {phase} span began")
    assert child.returncode == -signal.SIGKILL
    # Only the killed writer's staging is a problem (and is cleaned up); everything
    # committed is whole.
    problems = WeightCache(cache).verify()
    assert all("staging" in str(p.path) for p in problems), problems
    assert WeightCache(cache).verify() == []
    again = await _run(script, model, cache)
    out, _ = await asyncio.wait_for(again.communicate(), 120)
    assert again.returncode == 0
    assert out.decode().strip() == expected
    assert WeightCache(cache).verify() == []
