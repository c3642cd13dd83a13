"""Fixtures for cache tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from pullweights.cache import WeightCache
from tests.cache.graphs import reference_output, small_gguf
from tests.servers.static_aiohttp import AiohttpStaticServer


@pytest.fixture
def cache(tmp_path: Path) -> WeightCache:
    return WeightCache(tmp_path / "cache")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small quantized GGUF (see ``tests/cache/graphs.py``), served from its directory."""
    return small_gguf(tmp_path_factory.mktemp("www") / "model.gguf")


@pytest.fixture(scope="module")
def expected(model_file: Path) -> np.ndarray:
    """The model's output built without any cache (checked against ``gguf.quants``)."""
    return asyncio.run(reference_output(model_file))


@pytest.fixture
async def server(model_file: Path) -> AsyncIterator[AiohttpStaticServer]:
    async with AiohttpStaticServer(model_file.parent) as srv:
        yield srv
