"""Generate text with a GGUF model pulled over HTTP by range requests.

    python examples/generate_url.py ["prompt"] [--model PATH_OR_NAME ...]

To stay self-contained the example serves the model itself: a tiny aiohttp server on
127.0.0.1 answers range requests from the local file (or the demo model's installed part
files, read in place). pullweights opens ``http://127.0.0.1:PORT/model.gguf``, reads the
header, then pulls each weight's byte range into a (temporary) weight cache. With a
persistent cache (``create_context()``'s default), a second load of the same URL needs no
transfer at all: the header and every weight are remembered.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile

from aiohttp import web

from loaders import GenerationStats, SamplingParams, generate, load_model
from pullweights.gguf.reader import open_model_source
from pullweights.runtime.context import create_context
from pullweights.sources.base import ByteSource

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def range_app(source: ByteSource) -> web.Application:
    """An app serving ``source`` at ``/model.gguf`` with HTTP range support."""
    etag = '"pullweights-example"'

    async def handle(request: web.Request) -> web.StreamResponse:
        match = _RANGE.fullmatch(request.headers.get("Range", ""))
        if match is None:
            start, end = 0, source.size - 1
            status = 200
        else:
            start = int(match.group(1))
            end = min(int(match.group(2) or source.size - 1), source.size - 1)
            status = 206
        if start > end:
            return web.Response(status=416, headers={"Content-Range": f"bytes */{source.size}"})
        headers = {
            "ETag": etag,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{source.size}"
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = end - start + 1
        await response.prepare(request)
        step = 4 << 20
        for offset in range(start, end + 1, step):
            await response.write(await source.read(offset, min(step, end + 1 - offset)))
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/model.gguf", handle)
    return app


async def main(model: str | list[str], prompt: str) -> None:
    source = await open_model_source(model)
    runner = web.AppRunner(range_app(source))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/model.gguf"
    try:
        with tempfile.TemporaryDirectory(prefix="pullweights-example-") as cache:
            # A throw-away cache: no point saving the onnxruntime session into it.
            context = create_context(cache_dir=cache, session_cache=False)
            llm = await load_model(url, context=context, context_length=1024)
            stats = GenerationStats()
            params = SamplingParams(max_tokens=32)
            print(f"model from {url}:")
            async for text in generate(llm, prompt, params, stats=stats):
                print(text, end="", flush=True)
            print(
                f"\n[load {llm.stats.seconds:.1f} s, {stats.decode_tokens_per_second:.1f} tokens/s]"
            )
    finally:
        await runner.cleanup()
        await source.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", nargs="?", default="The capital of France is")
    parser.add_argument("--model", nargs="+", default=["gemma3-270m"])
    args = parser.parse_args()
    asyncio.run(main(args.model[0] if len(args.model) == 1 else args.model, args.prompt))
