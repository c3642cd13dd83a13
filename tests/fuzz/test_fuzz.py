"""The fuzzer in the default suite: a few dozen mutated tiny models through ``inspect``
and ``run`` in a worker process, and the stored regressions (``regressions.json``, the
issue's cases and what earlier runs found). Every input must end in its result or one
typed error: no traceback, crash, hang, memory blow-up or changed text.

The long run is ``python -m tests.fuzz --inputs 10000 --seed 1 --out DIR`` (README,
"Guarantees").
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fuzz.harness import FAILURES, fuzz

REGRESSIONS = Path(__file__).with_name("regressions.json")
CI_INPUTS = 40


def test_bounded_fuzz_run_and_regressions(tmp_path: Path) -> None:
    cases = [(case["seed"], case["ops"]) for case in json.loads(REGRESSIONS.read_text())]
    summary = fuzz(CI_INPUTS, seed=0, out=tmp_path, tiny_only=True, timeout=120.0, cases=cases)
    failed = {kind: summary.outcomes.get(kind, 0) for kind in FAILURES}
    assert failed == dict.fromkeys(FAILURES, 0), summary.failures[:5]
    tiny_cases = sum(1 for name, _ in cases if name.startswith("tiny-"))
    assert summary.inputs == CI_INPUTS + tiny_cases
    # The inputs reach both ends: some load and generate, most are refused with an error.
    assert summary.outcomes["ok"] > 0 and summary.outcomes["error"] > 0


@pytest.mark.model
def test_regressions_on_the_real_headers(tmp_path: Path) -> None:
    cases = [
        (case["seed"], case["ops"])
        for case in json.loads(REGRESSIONS.read_text())
        if case["seed"].startswith("header-")
    ]
    summary = fuzz(0, out=tmp_path, timeout=120.0, cases=cases)
    failed = {kind: summary.outcomes.get(kind, 0) for kind in FAILURES}
    assert failed == dict.fromkeys(FAILURES, 0), summary.failures[:5]
    assert summary.inputs == len(cases)
