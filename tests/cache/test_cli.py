"""``pullweights cache list|verify|prune|path`` and the size and age parsers behind them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pullweights.cache import WeightCache, format_size, parse_size
from pullweights.cache.sizes import parse_duration
from pullweights.cli import main
from tests.cache.payloads import entry_path, raw_payload

KIB = 1024


def _fill(root: Path, n: int) -> WeightCache:
    """``n`` models w0..w{n-1} of one 1 KiB entry each, w0 least recently used."""
    cache = WeightCache(root)
    now = time.time()
    for i in range(n):
        payload = raw_payload(np.full(256, i, np.float32), label=f"w{i}")
        with cache.writer(payload) as w:
            w.write("data", np.full(256, i, np.float32))
        record = cache.register_model(payload.source, [payload], name=f"w{i}")
        assert record is not None
        t = now - 3600 * (n - i)
        os.utime(entry_path(cache, payload) / "zarr.json", (t, t))
        os.utime(root / "models" / f"{record.key}.json", (t, t))
    return cache


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["cache", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_models_tensors_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "c"
    _fill(root, 3)
    code, out, _ = _run(capsys, "list", "--cache-dir", str(root))
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["NAME", "SIZE", "LAST"]
    assert [line.split()[0] for line in lines[1:4]] == ["w2", "w1", "w0"]
    assert "1.0 KiB" in lines[1]
    assert lines[-1] == f"3 models (3 entries), 3.0 KiB in {root}"
    code, out, _ = _run(capsys, "list", "--tensors", "--cache-dir", str(root))
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["KEY", "SIZE", "LAST"]
    assert [line.split()[-1] for line in lines[1:4]] == ["w2", "w1", "w0"]
    assert "raw" in lines[1] and lines[-1] == f"3 entries, 3.0 KiB in {root}"
    code, out, _ = _run(capsys, "list", "--json", "--cache-dir", str(root))
    doc = json.loads(out)
    assert (
        code == 0
        and doc["bytes"] == 3 * KIB
        and [m["name"] for m in doc["models"]]
        == [
            "w2",
            "w1",
            "w0",
        ]
    )
    assert doc["models"][0]["bytes"] == KIB and len(doc["models"][0]["entries"]) == 1
    code, out, _ = _run(capsys, "list", "--tensors", "--json", "--cache-dir", str(root))
    first = json.loads(out)["entries"][0]
    assert first["label"] == "w2" and first["parts"] == {
        "data": {"dtype": "float32", "shape": [256]}
    }


def test_verify_reports_and_removes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "c"
    cache = _fill(root, 2)
    code, out, _ = _run(capsys, "verify", "--cache-dir", str(root))
    assert code == 0 and out.strip() == f"verified 2 entries in {root}: ok"
    victim = cache.entries()[0]
    with open(victim.path / "data" / "c" / "0", "r+b") as f:
        f.write(b"\xff")
    code, out, _ = _run(capsys, "verify", "--keep", "--json", "--cache-dir", str(root))
    [problem] = json.loads(out)
    assert code == 1 and problem["key"] == victim.key and not problem["removed"]
    code, out, _ = _run(capsys, "verify", victim.key, "--cache-dir", str(root))
    assert code == 1 and "checksum" in out and "(removed)" in out
    assert [e.label for e in cache.entries()] == ["w0"]
    code, out, _ = _run(capsys, "verify", "w0", "--cache-dir", str(root))  # a model
    assert code == 0 and out.strip() == f"verified w0 in {root}: ok"
    for unknown in ("nothex", "0123456789abcdef"):
        code, _, err = _run(capsys, "verify", unknown, "--cache-dir", str(root))
        assert code == 1 and f"no entry or model {unknown!r}" in err


def test_rm_removes_a_whole_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "c"
    cache = _fill(root, 2)
    code, out, _ = _run(capsys, "rm", "w0", "--cache-dir", str(root))
    assert code == 0 and out.strip() == f"removed model w0 (1.0 KiB) from {root}"
    assert [m.name for m in cache.models()] == ["w1"] and len(cache.entries()) == 1
    code, _, err = _run(capsys, "rm", "w0", "--cache-dir", str(root))
    assert code == 1 and "no model 'w0'" in err and "models: w1" in err
    assert _run(capsys, "rm", cache.models()[0].key[:8], "--cache-dir", str(root))[0] == 0
    assert cache.entries() == [] and cache.models() == []


def test_prune(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "c"
    cache = _fill(root, 4)
    code, _, err = _run(capsys, "prune", "--cache-dir", str(root))
    assert code == 2 and "--max-size" in err
    code, out, _ = _run(capsys, "prune", "--older-than", "3.5h", "--cache-dir", str(root))
    assert code == 0 and "removed 1 model (1 entry, 1.0 KiB); 3 models, 3.0 KiB left" in out
    code, out, _ = _run(capsys, "prune", "--max-size", "2K", "--json", "--cache-dir", str(root))
    doc = json.loads(out)
    assert [m["name"] for m in doc["removed"]] == ["w1"] and doc["freed_bytes"] == KIB
    code, out, _ = _run(capsys, "prune", "--all", "--cache-dir", str(root))
    assert code == 0 and "removed 2 models" in out and cache.entries() == []
    with pytest.raises(SystemExit):
        main(["cache", "prune", "--max-size", "lots", "--cache-dir", str(root)])
    assert "is not a size" in capsys.readouterr().err


def test_cache_dir_that_is_a_file_is_one_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "file"
    path.write_text("not a directory")
    for command in ("list", "verify", "path"):
        code, out, err = _run(capsys, command, "--cache-dir", str(path))
        assert code == 1 and out == "" and "Traceback" not in err
        assert (
            err
            == f"pullweights cache: error: cache directory {path} exists and is not a directory\n"
        )
    assert path.read_text() == "not a directory"


def test_path_follows_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PULLWEIGHTS_CACHE", str(tmp_path / "env"))
    assert _run(capsys, "path") == (0, f"{tmp_path / 'env'}\n", "")
    assert _run(capsys, "path", "--cache-dir", str(tmp_path / "x"))[1] == f"{tmp_path / 'x'}\n"
    monkeypatch.delenv("PULLWEIGHTS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _run(capsys, "path")[1] == f"{tmp_path / 'xdg' / 'pullweights'}\n"


def test_sizes_and_durations() -> None:
    assert parse_size("1048576") == 1 << 20
    assert parse_size("2G") == parse_size("2GB") == parse_size("2 GiB") == 2 << 30
    assert parse_size("1.5k") == 1536 and parse_size(".5M") == 1 << 19
    assert parse_size(7) == 7
    for bad in ("", "G", "2X", "-1", "1e9"):
        with pytest.raises(ValueError, match="not a size"):
            parse_size(bad)
    assert parse_duration("90") == 90 and parse_duration("2w") == 14 * 86400
    assert parse_duration("1.5h") == 5400
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")
    assert [format_size(n) for n in (0, 1023, 1024, 1536, 5 << 30, 3 << 50)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "1.5 KiB",
        "5.0 GiB",
        "3.0 PiB",
    ]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pullweights", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )


def test_a_run_is_one_model_in_cache_list_and_rm_removes_it(tmp_path: Path) -> None:
    from tests.reference import write_tiny_model

    model = tmp_path / "tiny.gguf"
    write_tiny_model(model, "qwen2", quant="Q8_0")
    cache = str(tmp_path / "cache")
    done = _cli("run", str(model), "Paris is", "--cache-dir", cache, "--max-tokens", "2", "--quiet")
    assert done.returncode == 0, done.stderr
    listed = _cli("cache", "list", "--json", "--cache-dir", cache)
    [row] = json.loads(listed.stdout)["models"]
    assert row["name"] == str(model) and row["entries"] and row["bytes"] > 0
    text = _cli("cache", "list", "--cache-dir", cache).stdout.splitlines()
    assert text[0].startswith("NAME") and str(model)[-21:] in text[1]  # one row
    removed = _cli("cache", "rm", str(model), "--cache-dir", cache)
    assert removed.returncode == 0 and removed.stdout.startswith("removed model")
    assert json.loads(_cli("cache", "list", "--json", "--cache-dir", cache).stdout)["models"] == []
    unknown = _cli("cache", "verify", "deadbeef00", "--cache-dir", cache)
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
    assert "no entry or model 'deadbeef00'" in unknown.stderr


def test_verify_checks_remembered_url_headers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "c"
    remote = root / "remote"
    remote.mkdir(parents=True)
    (remote / "0badc0de.json").write_text("{not json")
    (remote / "0badc0de.head").write_bytes(b"GGUF")
    code, out, err = _run(capsys, "verify", "--cache-dir", str(root))
    assert code == 1 and "Traceback" not in err
    assert "0badc0de: the record is not JSON" in out and "(removed)" in out
    assert list(remote.iterdir()) == []
    assert _run(capsys, "verify", "--cache-dir", str(root))[0] == 0
