"""Fixtures for cache tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from pullweights.cache import WeightCache


@pytest.fixture
def cache(tmp_path: Path) -> WeightCache:
    return WeightCache(tmp_path / "cache")
