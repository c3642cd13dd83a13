"""Generate text with a local GGUF model (default: the installed gemma3 demo model).

    python examples/generate_local.py ["prompt"] [--model PATH_OR_NAME ...] [--chat]

The model's weights are pulled from the file (or its installed part files) on demand;
quantized layouts go to the weight cache, so the second run starts faster.
"""

from __future__ import annotations

import argparse
import asyncio

from loaders import GenerationStats, SamplingParams, generate, load_model


async def main(model: str | list[str], prompt: str, chat: bool) -> None:
    llm = await load_model(model, context_length=2048)
    stats = GenerationStats()
    params = SamplingParams(temperature=0.7, top_p=0.95, seed=0, max_tokens=64)
    async for text in generate(llm, prompt, params, chat=chat, stats=stats):
        print(text, end="", flush=True)
    print(
        f"\n[{stats.prompt_tokens} prompt tokens, {stats.generated_tokens} generated, "
        f"first token after {stats.time_to_first_token * 1000:.0f} ms, "
        f"{stats.decode_tokens_per_second:.1f} tokens/s]"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", nargs="?", default="The three best things about Paris are")
    parser.add_argument("--model", nargs="+", default=["gemma3-270m"])
    parser.add_argument("--chat", action="store_true")
    args = parser.parse_args()
    spec = args.model[0] if len(args.model) == 1 else args.model
    asyncio.run(main(spec, args.prompt, args.chat))
