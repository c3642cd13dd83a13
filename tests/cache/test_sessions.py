"""Saved-session entries: crash-safe commits, checks on read, listing, verify, eviction."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from pullweights.cache import WeightCache
from pullweights.cache.checksum import checksum
from pullweights.cache.sessions import SessionWriter
from pullweights.cli import main
from tests.cache.payloads import leftovers, raw_payload

KEY = "a" * 40
OTHER = "b" * 40
KIB = 1024


def _save(cache: WeightCache, key: str = KEY, files: dict[str, bytes] | None = None) -> Path:
    files = files or {"model.onnx": b"model" * 10, "model.data": bytes(range(256)) * 16}
    writer = cache.session_writer(key)
    directory = writer.open()
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return writer.commit("a test session", "onnxruntime 0.0")


def test_commit_publishes_a_whole_entry(cache: WeightCache) -> None:
    entry = _save(cache)
    assert entry == cache.root / "sessions" / KEY
    assert cache.open_session(KEY) == entry
    record = json.loads((entry / "session.json").read_bytes())
    assert record["key"] == KEY and record["made_by"] == "onnxruntime 0.0"
    assert record["files"]["model.data"] == {
        "size": 4096,
        "checksum": checksum(bytes(range(256)) * 16),
    }
    assert cache.open_session(OTHER) is None
    assert leftovers(cache.root) == []


def test_abort_and_failed_commit_publish_nothing(
    cache: WeightCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = cache.session_writer(KEY)
    (writer.open() / "model.onnx").write_bytes(b"x")
    writer.abort()
    writer.abort()
    assert cache.open_session(KEY) is None and leftovers(cache.root) == []

    writer = cache.session_writer(KEY)
    (writer.open() / "sub").mkdir()  # entries are flat: refused at commit
    with pytest.raises(OSError, match="unexpected item"):
        writer.commit("x", "y")
    assert not (cache.root / "sessions" / KEY).exists() and leftovers(cache.root) == []


def test_a_stopped_writer_leaves_a_partial_write_that_verify_removes(tmp_path: Path) -> None:
    cache = WeightCache(tmp_path)
    writer = SessionWriter(tmp_path, KEY, durable=False)
    (writer.open() / "model.onnx").write_bytes(b"half")
    writer._release()  # what a killed process leaves: its lock is gone
    assert cache.open_session(KEY) is None
    problems = cache.verify()
    assert [(p.key, p.problem, p.removed) for p in problems] == [
        (KEY, "partial write left by a stopped writer", True)
    ]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("damage", ["flip", "truncate", "missing", "extra", "record"])
def test_damaged_entries_are_never_opened(cache: WeightCache, damage: str) -> None:
    entry = _save(cache)
    model = entry / "model.onnx"
    if damage == "flip":
        model.write_bytes(b"Model" + model.read_bytes()[5:])
    elif damage == "truncate":
        os.truncate(entry / "model.data", 100)
    elif damage == "missing":
        os.unlink(entry / "model.data")
    elif damage == "extra":
        (entry / "stray.bin").write_bytes(b"?")
    else:
        (entry / "session.json").write_text("{not json")
    assert cache.open_session(KEY) is None
    assert not entry.exists()  # removed, so the next compile saves a whole one


def test_every_file_is_checksummed_before_it_is_opened(cache: WeightCache) -> None:
    entry = _save(cache)
    data = bytearray((entry / "model.data").read_bytes())
    data[2000] ^= 0xFF
    (entry / "model.data").write_bytes(data)
    cache.verify_on_load = False  # a size check only...
    assert cache.open_session(KEY) == entry
    problems = cache.verify(KEY, remove=False)  # ...verify reads everything
    assert len(problems) == 1 and "checksum" in problems[0].problem and not problems[0].removed
    cache.verify_on_load = True  # the default: the flipped byte is found on open
    assert cache.open_session(KEY) is None and not entry.exists()


def test_second_writer_of_a_key_keeps_the_first_entry(cache: WeightCache) -> None:
    first = cache.session_writer(KEY)
    second = cache.session_writer(KEY)
    (first.open() / "model.onnx").write_bytes(b"first")
    (second.open() / "model.onnx").write_bytes(b"second")
    entry = first.commit("1", "rt")
    assert second.commit("2", "rt") == entry
    assert (entry / "model.onnx").read_bytes() == b"first"
    assert leftovers(cache.root) == []


def test_sessions_are_listed_counted_removed_and_pruned(tmp_path: Path) -> None:
    cache = WeightCache(tmp_path)
    payload = raw_payload(np.zeros(256, np.float32), label="w")
    with cache.writer(payload) as w:
        w.write("data", np.zeros(256, np.float32))
    entry = _save(cache)
    infos = {e.key: e for e in cache.entries()}
    assert set(infos) == {cache.content_key(payload), KEY}
    assert infos[KEY].nbytes == 50 + 4096 and infos[KEY].path == entry
    assert infos[KEY].transform == "onnxruntime 0.0 session"
    assert cache.total_bytes() == 50 + 4096 + KIB
    assert cache.verify() == []
    old = time.time() - 7200
    os.utime(entry / "session.json", (old, old))
    [pruned] = cache.prune(older_than=3600)  # an entry no model claims
    assert pruned.name == "(no model)" and [e.key for e in pruned.sessions] == [KEY]
    assert not entry.exists() and cache.get(payload) is not None
    _save(cache)
    assert cache.remove(KEY) and not cache.remove(KEY)


def test_eviction_counts_sessions_and_spares_those_in_use(tmp_path: Path) -> None:
    cache = WeightCache(tmp_path, max_bytes=8 * KIB)
    entry = _save(cache, files={"model.data": b"\0" * (6 * KIB)})
    old = time.time() - 3600
    os.utime(entry / "session.json", (old, old))

    class User:
        pass

    user = User()
    cache.mark_in_use(KEY, user)
    data = np.ones(1024, np.float32)  # 4 KiB: 10 KiB in all, over the limit
    with cache.writer(raw_payload(data, label="a")) as w:
        w.write("data", data)
    assert entry.exists()  # least recently used, but in use
    del user
    data2 = np.full(1024, 2, np.float32)
    with cache.writer(raw_payload(data2, label="b")) as w:
        w.write("data", data2)
    assert not entry.exists()  # now evicted first
    assert cache.total_bytes() <= 8 * KIB


def test_cli_lists_and_verifies_sessions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = WeightCache(tmp_path)
    _save(cache)
    assert main(["cache", "list", "--tensors", "--json", "--cache-dir", str(tmp_path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [e["key"] for e in doc["entries"]] == [KEY] and doc["bytes"] == 50 + 4096
    assert doc["entries"][0]["transform"] == "onnxruntime 0.0 session"
    assert main(["cache", "verify", "--cache-dir", str(tmp_path)]) == 0
    assert "verified 1 entry" in capsys.readouterr().out
    assert main(["cache", "prune", "--all", "--cache-dir", str(tmp_path)]) == 0
    assert not (tmp_path / "sessions" / KEY).exists()
