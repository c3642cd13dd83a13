"""Fixtures for the loader tests: metadata and tokenizers of the installed demo models.

The real models are read in place from their installed part files with
:func:`pullweights.gguf.open_gguf` (only the header is read); tests using these fixtures are
marked ``model``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from loaders.tokenizer import Tokenizer
from pullweights.gguf import open_gguf

EXPECTED_TOKENS = Path(__file__).parent / "data" / "expected_tokens.json"

MODELS = {"gemma3": "gemma3-270m", "qwen2": "qwen2.5-coder-0.5b"}
"""Keys of ``expected_tokens.json`` and the installed model each was dumped from."""


async def _read_metadata(name: str) -> dict[str, object]:
    gguf = await open_gguf(name)
    async with gguf:
        return dict(gguf.metadata)


@pytest.fixture(scope="session")
def model_metadata() -> dict[str, dict[str, object]]:
    """GGUF metadata of both demo models, by ``expected_tokens.json`` key."""
    return {key: asyncio.run(_read_metadata(name)) for key, name in MODELS.items()}


@pytest.fixture(scope="session")
def model_tokenizers(model_metadata: dict[str, dict[str, object]]) -> dict[str, Tokenizer]:
    """Tokenizers of both demo models, built once per session."""
    return {key: Tokenizer.from_gguf_metadata(meta) for key, meta in model_metadata.items()}


@pytest.fixture(scope="session")
def llamacpp_expected() -> dict[str, object]:
    """llama.cpp's ids, decodings, end-of-generation ids and chat renderings."""
    data: dict[str, object] = json.loads(EXPECTED_TOKENS.read_text())
    return data
