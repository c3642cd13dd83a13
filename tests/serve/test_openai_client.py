"""``pullweights serve`` driven by the official ``openai`` client, on 127.0.0.1.

One server (a child process) serves a tiny random qwen2 model for the module. Greedy
answers are checked against the same generation run in this process through
:func:`loaders.generate` (same file, same settings): the server must add nothing and lose
nothing. Concurrent requests must give exactly the answers of the same requests one at a
time.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import numpy as np
import openai
import pytest

from loaders import LanguageModel, SamplingParams, generate, load_model
from pullweights.runtime.context import create_context
from tests.reference import write_tiny_model
from tests.serve.server_process import ServerProcess

MODEL = "tiny"
SLOTS = 3


@pytest.fixture(scope="module")
def gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("serve") / "tiny-qwen2.gguf", "qwen2")


@pytest.fixture(scope="module")
def server(gguf: Path) -> Iterator[ServerProcess]:
    with ServerProcess(f"{MODEL}={gguf}", "--no-cache", "--slots", str(SLOTS)) as process:
        yield process


@pytest.fixture
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


@pytest.fixture
async def aclient(server: ServerProcess) -> AsyncIterator[openai.AsyncOpenAI]:
    url = server.url + "/v1"
    async with openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0) as c:
        yield c


async def local_text(gguf: Path, prompt: object, max_tokens: int) -> str:
    """The greedy answer of the same model loaded in this process."""
    model: LanguageModel = await load_model(str(gguf), context=create_context(cache_dir=None))
    params = SamplingParams(max_tokens=max_tokens)
    return "".join([t async for t in generate(model, prompt, params)])  # type: ignore[arg-type]


def messages(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


def test_models(client: openai.OpenAI) -> None:
    listed = client.models.list()
    assert [m.id for m in listed.data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


async def test_chat_equals_the_python_api(client: openai.OpenAI, gguf: Path) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=messages("Hello there"), max_tokens=12, temperature=0
    )
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == await local_text(gguf, messages("Hello there"), 12)
    assert reply.usage is not None
    assert reply.usage.completion_tokens <= 12
    assert choice.finish_reason == ("length" if reply.usage.completion_tokens == 12 else "stop")
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens

    # Streaming gives the same text, a role first, a finish reason last, usage on request.
    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages("Hello there"),
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == choice.finish_reason and not any(finishes[:-1])
    assert chunks[-1].usage is not None and not chunks[-1].choices
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
    # The same prompt again: all but its last token come from a KV cache slot.
    usage = chunks[-1].usage
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == usage.prompt_tokens - 1


async def test_completions(client: openai.OpenAI, gguf: Path) -> None:
    prompt = "The capital of France is"
    reply = client.completions.create(model=MODEL, prompt=prompt, max_tokens=10, temperature=0)
    assert reply.choices[0].text == await local_text(gguf, prompt, 10)
    streamed = client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=10, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == reply.choices[0].text


def test_logprobs(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=messages("Hello"),
        max_tokens=6,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
    )
    choice = reply.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    content = choice.logprobs.content
    assert reply.usage is not None and len(content) == reply.usage.completion_tokens
    for entry in content:
        tops = [t.logprob for t in entry.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True)
        assert entry.logprob == pytest.approx(tops[0])  # greedy: the most likely token
        assert sum(math.exp(t) for t in tops) <= 1 + 1e-9
    text = "".join(bytes(e.bytes or []).decode("utf-8", "replace") for e in content)
    assert choice.message.content == text or "\ufffd" in text

    legacy = client.completions.create(
        model=MODEL, prompt="Hello", max_tokens=4, temperature=0, logprobs=2
    )
    lp = legacy.choices[0].logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs)
    assert all(len(t) <= 2 for t in lp.top_logprobs)


def test_stop_and_seed(client: openai.OpenAI) -> None:
    free = client.completions.create(model=MODEL, prompt="Once", max_tokens=12, temperature=0)
    text = free.choices[0].text
    cut = text[3:5]
    assert cut, text
    stopped = client.completions.create(
        model=MODEL, prompt="Once", max_tokens=12, temperature=0, stop=[cut]
    )
    assert stopped.choices[0].text == text[: text.index(cut)]
    assert stopped.choices[0].finish_reason == "stop"

    def sampled(seed: int) -> str:
        reply = client.completions.create(
            model=MODEL, prompt="Once", max_tokens=12, temperature=1.0, top_p=0.9, seed=seed
        )
        return reply.choices[0].text

    assert sampled(5) == sampled(5)
    assert len({sampled(s) for s in range(4)}) > 1


async def test_concurrent_requests_equal_one_at_a_time(
    aclient: openai.AsyncOpenAI, server: ServerProcess
) -> None:
    """8 greedy requests at once (3 slots: some wait) answer exactly as one at a time."""
    prompts = [f"Question {i}: what is {i} plus {i}?" for i in range(8)]

    async def ask(text: str) -> str:
        reply = await aclient.chat.completions.create(
            model=MODEL, messages=messages(text), max_tokens=16, temperature=0
        )
        return reply.choices[0].message.content or ""

    alone = [await ask(p) for p in prompts]
    together = await asyncio.gather(*(ask(p) for p in prompts))
    assert list(together) == alone
    assert len(set(alone)) > 1
    assert metric(server, "slots_peak_in_use{") == SLOTS  # they did run side by side

    # Streaming requests at once too.
    async def ask_streaming(text: str) -> str:
        stream = await aclient.chat.completions.create(
            model=MODEL, messages=messages(text), max_tokens=16, temperature=0, stream=True
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert list(await asyncio.gather(*(ask_streaming(p) for p in prompts))) == alone


def metric(server: ServerProcess, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as page:
        for line in page.read().decode().splitlines():
            if line.startswith(f"pullweights_{name}"):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name}")


def wait_for(condition: object, what: str, limit: float = 60.0) -> None:
    """Poll ``condition`` until true (a bound on waiting, not a timing assertion)."""
    deadline = time.monotonic() + limit
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def test_disconnect_mid_stream_cancels_the_generation(
    client: openai.OpenAI, server: ServerProcess
) -> None:
    before = metric(server, "generations_cancelled_total")
    generated = metric(server, "generated_tokens_total")
    stream = client.completions.create(
        model=MODEL, prompt="Tell me a long story", max_tokens=200, temperature=0, stream=True
    )
    pieces = iter(stream)
    for _ in range(3):
        next(pieces)
    stream.close()
    wait_for(lambda: metric(server, "generations_cancelled_total") == before + 1, "the cancel")
    wait_for(lambda: metric(server, "slots_in_use") == 0, "the slot's return")
    # The generation stopped long before its 200 tokens (the tiny model's EOS is rare).
    assert metric(server, "generated_tokens_total") - generated < 200
    assert client.completions.create(model=MODEL, prompt="Hi", max_tokens=2).choices


def test_bad_requests(client: openai.OpenAI, server: ServerProcess) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=messages("Hi"))
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as negative:
        client.chat.completions.create(model=MODEL, messages=messages("Hi"), max_tokens=-1)
    assert negative.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError) as long:
        client.completions.create(model=MODEL, prompt="word " * 400, max_tokens=4)
    assert long.value.code == "context_length_exceeded"
    assert "maximum context length is 256 tokens" in long.value.message
    with pytest.raises(openai.BadRequestError) as roles:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "wizard", "content": "Hi"}],  # type: ignore[list-item,misc]
        )
    assert roles.value.param == "messages[0].role"
    with pytest.raises(openai.BadRequestError) as several:
        client.chat.completions.create(model=MODEL, messages=messages("Hi"), n=2)
    assert several.value.param == "n"


async def test_malformed_json_and_unknown_routes(server: ServerProcess) -> None:
    async with aiohttp.ClientSession() as session:
        url = server.url + "/v1/chat/completions"
        async with session.post(url, data=b'{"model": "tiny", "messages": [') as response:
            assert response.status == 400
            error = (await response.json())["error"]
            assert error["type"] == "invalid_request_error" and error["code"] == "invalid_json"
        async with session.post(url, data=b"[1, 2]") as response:
            assert response.status == 400
        async with session.get(server.url + "/v1/nothing") as response:
            assert response.status == 404
            assert "error" in await response.json()
        async with session.get(url) as response:
            assert response.status == 405
        async with session.get(server.url + "/health") as response:
            assert await response.json() == {"status": "ok", "models": {MODEL: "loaded"}}


def test_metrics_page(server: ServerProcess) -> None:
    assert metric(server, "slots{") == SLOTS
    assert metric(server, "model_loaded{") == 1
    assert metric(server, "private_memory_bytes") > 0
    assert metric(server, "prompt_tokens_total") >= metric(server, "prompt_tokens_cached_total")


async def test_api_key_and_lazy_loading(gguf: Path) -> None:
    with ServerProcess(f"{MODEL}={gguf}", "--no-cache", "--lazy", "--api-key", "sesame") as srv:
        async with aiohttp.ClientSession() as session, session.get(srv.url + "/health") as health:
            assert (await health.json())["models"] == {MODEL: "not loaded"}
        url = srv.url + "/v1"
        with (
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0) as refused,
            pytest.raises(openai.AuthenticationError),
        ):
            refused.models.list()
        with openai.OpenAI(base_url=url, api_key="sesame", max_retries=0) as client:
            first = client.completions.create(model=MODEL, prompt="Hi", max_tokens=3, temperature=0)
        assert first.choices[0].text == await local_text(gguf, "Hi", 3)
    assert any("loads on first request" in line for line in srv.log)


def test_sse_wire_format(server: ServerProcess) -> None:
    """The raw stream: ``data: {json}`` events separated by blank lines, then [DONE]."""
    import urllib.request

    body = json.dumps({"model": MODEL, "prompt": "Hi", "max_tokens": 3, "stream": True})
    request = urllib.request.Request(
        server.url + "/v1/completions", body.encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = response.read().decode().split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    assert all(e.startswith("data: {") for e in events[:-2])
    assert np.all([json.loads(e[6:])["object"] == "text_completion" for e in events[:-2]])
