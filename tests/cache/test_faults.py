"""The cache fault matrix: every kind of file damaged every way, kills, full and read-only
disks, concurrent writers. Each case ends in the right output (or one clear error), and
no damaged entry survives a ``verify``. More seeds: see ``tests/cache/faults.py``."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import pullweights.cache.confined as confined
import pullweights.cache.removal as removal
import pullweights.cache.staged as staged
from pullweights.cache import WeightCache
from pullweights.cache.checksum import forget
from pullweights.errors import CacheError, PullWeightsError
from tests.cache.faults import SEEDS, damage, digest, remount_read_only, start_load, tmpfs
from tests.cache.graphs import load
from tests.cache.payloads import leftovers
from tests.servers.static_aiohttp import AiohttpStaticServer


def _one(pattern: str) -> Callable[[Path], Path]:
    def pick(root: Path) -> Path:
        found = sorted(root.glob(pattern), key=lambda p: (-p.stat().st_size, str(p)))
        assert found, pattern
        return found[0]

    return pick


TARGETS: dict[str, Callable[[Path], Path]] = {
    "entry-chunk": _one("entries/*/*/B/c/0/0/0"),
    "entry-record": _one("entries/*/*/zarr.json"),
    "array-metadata": _one("entries/*/*/scales/zarr.json"),
    "session-model": _one("sessions/*/model.onnx"),
    "session-data": _one("sessions/*/model.data"),
    "session-record": _one("sessions/*/session.json"),
    "index": _one("index/*/*"),
    "model-record": _one("models/*.json"),
    "remote-record": _one("remote/*.json"),
    "remote-head": _one("remote/*.head"),
}
DAMAGES = ("flip", "truncate", "zero")


def _cases() -> list[object]:
    cases: list[object] = []
    for target in TARGETS:
        for how in DAMAGES:
            for seed in SEEDS:
                cases.append(pytest.param(target, how, seed, id=f"{target}-{how}-{seed}"))
    return cases


@pytest.mark.parametrize(("target", "how", "seed"), _cases())
async def test_damaged_file(
    tmp_path: Path,
    server: AiohttpStaticServer,
    expected: np.ndarray,
    target: str,
    how: str,
    seed: int,
) -> None:
    root = tmp_path / "cache"
    model = f"http://127.0.0.1:{server.port}/model.gguf"
    await load(root, model, remember=True)
    damage(TARGETS[target](root), how, seed)
    forget()
    try:
        _graph, out = await load(root, model, remember=True)
    except PullWeightsError as exc:  # one clear error is an acceptable end
        assert str(exc)
    else:
        np.testing.assert_array_equal(out, expected)
    WeightCache(root).verify()
    assert WeightCache(root).verify() == []
    forget()
    _graph, out = await load(root, model, remember=True)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("seed", SEEDS)
async def test_killed_during_a_cold_load(
    tmp_path: Path, model_file: Path, expected: np.ndarray, seed: int
) -> None:
    root = tmp_path / "cache"
    delays = np.random.default_rng(seed).uniform(0.0, 0.4, 2)
    for delay in delays:
        child = start_load(root, model_file)
        assert child.stdout is not None and child.stdout.readline() == "started\n"
        time.sleep(float(delay))
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
    WeightCache(root).verify()
    assert WeightCache(root).verify() == [] and leftovers(root) == []
    _graph, out = await load(root, model_file)
    np.testing.assert_array_equal(out, expected)


def test_two_processes_load_into_one_cache(
    tmp_path: Path, model_file: Path, expected: np.ndarray
) -> None:
    root = tmp_path / "cache"
    children = [start_load(root, model_file) for _ in range(2)]
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        assert out.splitlines()[-1] == digest(expected)
    cache = WeightCache(root)
    assert cache.verify() == [] and leftovers(root) == []
    kinds = [e.kind for e in cache.entries()]
    assert kinds.count("session") == 1 and kinds.count("weights") <= 2  # each stored once


async def test_disk_full_is_one_clear_error(
    tmp_path: Path, model_file: Path, expected: np.ndarray
) -> None:
    with tmpfs(tmp_path / "small", "1m") as mount:
        root = mount / "cache"
        with pytest.raises(CacheError, match="is full"):
            await load(root, model_file)
        assert leftovers(root) == []
        WeightCache(root).verify()
        assert WeightCache(root).verify() == []
    _graph, out = await load(None, model_file)  # without the cache it runs
    np.testing.assert_array_equal(out, expected)


async def test_read_only_cache_with_a_damaged_entry_still_runs(
    tmp_path: Path, model_file: Path, expected: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    with tmpfs(tmp_path / "ro", "64m") as mount:
        root = mount / "cache"
        await load(root, model_file, sessions=False)
        damage(TARGETS["entry-chunk"](root), "flip", 0)
        remount_read_only(mount)
        before = sorted(str(p) for p in root.rglob("*"))
        forget()
        with caplog.at_level(logging.WARNING, "pullweights.cache"):
            graph, out = await load(root, model_file)
        np.testing.assert_array_equal(out, expected)
        assert not graph.from_saved_session and graph.transformed == 1
        assert "cannot be written" in caplog.text and "not used" in caplog.text
        assert sorted(str(p) for p in root.rglob("*")) == before


async def test_unwritable_cache_simulated(
    tmp_path: Path,
    model_file: Path,
    expected: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same without mounting (root ignores file modes): every write fails EROFS."""
    root = tmp_path / "cache"
    await load(root, model_file, sessions=False)
    damage(TARGETS["entry-chunk"](root), "zero", 0)

    def refuse(*args: object, **kwargs: object) -> object:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(staged, "make_staging", refuse)
    monkeypatch.setattr(confined, "write_new_file", refuse)
    monkeypatch.setattr(removal, "move_to_trash", refuse)
    monkeypatch.setattr(confined, "area", refuse)
    forget()
    with caplog.at_level(logging.WARNING, "pullweights.cache"):
        _graph, out = await load(root, model_file)
    np.testing.assert_array_equal(out, expected)
    assert "cannot be written" in caplog.text
