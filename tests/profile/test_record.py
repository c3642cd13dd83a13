"""Records: JSON round trip, markdown summary, PNG timeline, and the missing-matplotlib error."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pullweights.errors import UnsupportedError
from pullweights.profile import ProfileRecord, ProfileStatus
from pullweights.profile.analysis import find_peak
from pullweights.profile.markdown import render
from tests.profile.test_analysis import EVENTS, PRIVATE, RSS, T0, _samples

MIB = 2**20


def _record(status: ProfileStatus | None = None) -> ProfileRecord:
    return ProfileRecord(
        target="synthetic",
        origin=T0,
        end=T0 + 1.0,
        samples=_samples(PRIVATE, RSS),
        events=list(EVENTS),
        status=status or ProfileStatus(exit_code=0),
        metadata={"note": "test"},
    )


def test_json_round_trip(tmp_path: Path) -> None:
    record = _record(ProfileStatus(exit_code=130, interrupted=True, error="SIGINT received"))
    path = record.write_json(tmp_path / "r.json")
    doc = json.loads(path.read_text())
    assert doc["format"] == "pullweights-profile/1"
    assert doc["status"]["interrupted"] is True and doc["status"]["exit_code"] == 130
    assert doc["peaks"]["private"]["nbytes"] == 120 * MIB
    assert doc["peaks"]["private"]["weights"][0]["name"] == "a"
    assert doc["marks"] == {"ready": pytest.approx(1.0)}
    assert len(doc["samples"]["time"]) == len(PRIVATE)
    back = ProfileRecord.read_json(path)
    assert back.status == record.status and back.target == "synthetic"
    assert list(back.samples.private) == list(record.samples.private)
    assert [p.label for p in back.phases] == [p.label for p in record.phases]
    peak, again = record.peak("private"), back.peak("private")
    assert peak is not None and again is not None
    assert (again.nbytes, again.weights) == (peak.nbytes, peak.weights)
    assert again.time == pytest.approx(peak.time)


def test_not_a_record(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a pullweights profile record"):
        ProfileRecord.read_json(tmp_path / "x.json")


def test_markdown_summary() -> None:
    text = render(_record())
    assert "# Profile: synthetic" in text
    assert (
        "| private (anonymous) | 120 MiB | 0.600 s | load, compile, transform, cache-write |"
        in (text)
    )
    assert "| `a` | transform, cache-write | 100 MiB |" in text
    assert "| fetch | 2 | 0.100 | 0.400 | 300 MiB | 0.79 | +70 MiB | +140 MiB |" in text
    assert "| compile (layers 0-1) | 1 (1 not ok) |" in text
    failed = render(_record(ProfileStatus(exit_code=3, failed=True)))
    assert "status: **failed (exit status 3)**" in failed


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = _record().plot(tmp_path / "t.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = ProfileRecord("nothing", T0, T0 + 1, _samples([], []))
    assert empty.plot(tmp_path / "e.png").stat().st_size > 0


def test_missing_matplotlib_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(UnsupportedError, match=r'pip install -e "\.\[plot\]"'):
        _record().plot(tmp_path / "t.png")
    assert not (tmp_path / "t.png").exists()


def test_peak_without_spans() -> None:
    peak = find_peak("rss", _samples(PRIVATE, RSS), [], T0)
    assert peak is not None and peak.phases == () and peak.weights == ()
