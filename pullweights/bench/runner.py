"""Run the bench: prepare every scenario once, then ``runs`` rounds of one fresh process
per scenario (the order rotates each round so machine noise spreads evenly), each
profiled from outside by :func:`pullweights.profile.profile_command`.

Per run: time to ready (the last ``ready`` mark before the first token: a pullweights
run marks its graph ready, then its model) and to the first token (``first-token``),
both in seconds from the moment the process was started (interpreter start and imports
included), and the peaks of private memory and RSS over the whole process.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pullweights.bench import scenarios as sc
from pullweights.bench.serve import FileServer
from pullweights.events import Phase
from pullweights.profile import ProfileRecord, profile_command

__all__ = ["METRICS", "BenchConfig", "BenchResult", "RunResult", "run_bench"]

#: The metrics of a run, in table order.
METRICS = ("ready_s", "first_token_s", "peak_private", "peak_rss")
PROMPT = (
    "The history of the city begins with a small settlement on an island in the river. "
    "Over the centuries it grew into a centre of trade, learning and government."
)


@dataclass
class BenchConfig:
    """What to bench and how often."""

    model: list[str]
    runs: int = 5
    prompt_tokens: int = 16
    context: int = 512
    threads: int = 2
    #: Scenario keys to run (empty: all that can run here).
    only: list[str] = field(default_factory=list)
    work_dir: Path | None = None


@dataclass
class RunResult:
    """One run of one scenario."""

    scenario: str
    round: int
    ok: bool
    status: str
    ready_s: float | None
    first_token_s: float | None
    peak_private: int | None
    peak_rss: int | None
    record: ProfileRecord | None = None


@dataclass
class BenchResult:
    """Every run, the medians and what was skipped."""

    config: BenchConfig
    scenarios: list[sc.Scenario]
    runs: list[RunResult]
    setup: dict[str, Any]

    def ok_runs(self, key: str) -> list[RunResult]:
        return [r for r in self.runs if r.scenario == key and r.ok]

    def median(self, key: str, metric: str) -> float | None:
        values = [getattr(r, metric) for r in self.ok_runs(key)]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    def best_baseline(self, metric: str) -> tuple[str, float] | None:
        """The baseline with the lowest median of ``metric``."""
        found = [
            (s.key, m)
            for s in self.scenarios
            if s.baseline and not s.skipped and (m := self.median(s.key, metric)) is not None
        ]
        return min(found, key=lambda item: item[1]) if found else None

    def median_run(self, key: str) -> RunResult | None:
        """The ok run with the median time to first token (for the plot)."""
        runs = sorted(
            (r for r in self.ok_runs(key) if r.first_token_s is not None),
            key=lambda r: r.first_token_s or 0.0,
        )
        return runs[len(runs) // 2] if runs else None


def _prompt_ids(gguf: Path, n: int) -> list[int]:
    async def encode() -> list[int]:
        from loaders.tokenizer import Tokenizer
        from pullweights.gguf.reader import open_gguf

        async with await open_gguf(str(gguf)) as f:
            tokenizer = Tokenizer.from_gguf_metadata(f.metadata)
        ids = tokenizer.encode(PROMPT * (n // 8 + 1))
        return ids[:n]

    return asyncio.run(encode())


def _model_parts(model: list[str]) -> list[Path]:
    from pullweights.gguf.installed import INSTALLED_MODELS, installed_model_parts
    from pullweights.profile.model_worker import check_model

    check_model(model)
    if len(model) == 1 and model[0] in INSTALLED_MODELS and not Path(model[0]).exists():
        return installed_model_parts(model[0])
    if any(m.startswith(("http://", "https://")) for m in model):
        from pullweights.errors import UnsupportedError

        raise UnsupportedError("bench needs a local model (it serves it over HTTP itself)")
    return [Path(m) for m in model]


def _export(gguf: Path, out: Path, external: bool, context: int) -> str:
    """Export for an onnxruntime scenario; returns why it cannot run ("" when it can)."""
    code = (
        "import asyncio, sys; from pullweights.export import export_model; "
        "asyncio.run(export_model(sys.argv[1], sys.argv[2], external_data=sys.argv[3] == '1', "
        "context_length=int(sys.argv[4])))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(gguf), str(out), "1" if external else "0", str(context)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or not out.exists():
        lines = done.stderr.strip().splitlines()
        return f"export failed: {lines[-1] if lines else done.returncode}"
    return ""


def _scenarios(
    cfg: BenchConfig,
    work: Path,
    gguf: Path,
    prompt: list[int],
    url: str,
    log: Callable[[str], None],
) -> list[sc.Scenario]:
    ctx, threads = cfg.context, cfg.threads
    warm = work / "warm-cache"
    found: list[sc.Scenario] = []
    for key, title, external in (
        ("ort-embedded", "onnxruntime, weights embedded", False),
        ("ort-external", "onnxruntime, external data", True),
    ):
        onnx_path = work / f"{key}" / "model.onnx"
        onnx_path.parent.mkdir()
        scenario = sc.baseline(key, title, sys.executable, "ort", onnx_path, prompt, threads, ctx)
        if not cfg.only or key in cfg.only:
            log(f"exporting {gguf.name} for {key}")
            scenario.skipped = _export(gguf, onnx_path, external, ctx)
        found.append(scenario)
    found += [
        sc.pullweights("pw-cold", "pullweights, cold (local GGUF)", str(gguf), prompt, ctx,
                       lambda run_dir: str(run_dir / "cache")),
        sc.pullweights("pw-http-cold", "pullweights, cold (loopback HTTP)", url, prompt, ctx,
                       lambda run_dir: str(run_dir / "cache")),
        sc.pullweights("pw-warm", "pullweights, warm cache", str(gguf), prompt, ctx,
                       lambda run_dir: str(warm)),
    ]  # fmt: skip
    python, why = sc.llamacpp_python()
    llama = sc.baseline("llama.cpp", "llama.cpp", python or "", "llamacpp", gguf, prompt,
                        threads, ctx)  # fmt: skip
    llama.skipped = why
    found.append(llama)
    hf = sc.baseline("transformers", "transformers (GGUF, float32)", sys.executable,
                     "transformers", gguf, prompt, threads, ctx)  # fmt: skip
    hf.skipped = sc.transformers_available()
    found.append(hf)
    for s in found:
        if cfg.only and s.key not in cfg.only and not s.skipped:
            s.skipped = "not selected"
    return found


def _measure(scenario: sc.Scenario, rnd: int, work: Path) -> RunResult:
    run_dir = sc.empty_dir(work, f"run-{scenario.key}-")
    try:
        with open(run_dir / "stderr.txt", "w+") as err:
            record = profile_command(
                scenario.command(run_dir), target=scenario.title, stdout=subprocess.DEVNULL,
                stderr=err,
            )  # fmt: skip
            err.seek(0)
            tail = err.read().strip().splitlines()[-1:]
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    first = record.mark_time(Phase.FIRST_TOKEN)
    # The last "ready" before the first token: the model's, after the graph's own.
    readies = [m.time - record.origin for m in record.marks if m.phase == Phase.READY]
    ready = max((t for t in readies if first is None or t <= first), default=None)
    ok = record.status.ok and ready is not None and first is not None
    private, rss = record.peak("private"), record.peak("rss")
    status = record.status.describe() + (f": {tail[0]}" if tail and not ok else "")
    return RunResult(
        scenario.key, rnd, ok, status, ready, first,
        private.nbytes if private else None, rss.nbytes if rss else None, record,
    )  # fmt: skip


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = print) -> BenchResult:
    """Prepare, run every scenario ``cfg.runs`` times interleaved, and return it all.

    Raises:
        SourceError: an unknown model; UnsupportedError: a remote model.
    """
    parts = _model_parts(cfg.model)
    own_dir = cfg.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="pullweights-bench-")) if own_dir else cfg.work_dir
    assert work is not None
    try:
        served = work / "www"
        served.mkdir(parents=True, exist_ok=True)
        gguf = sc.assemble(parts, served / "model.gguf")
        prompt = _prompt_ids(gguf, cfg.prompt_tokens)
        with FileServer(served) as server:
            scenarios = _scenarios(cfg, work, gguf, prompt, server.url("model.gguf"), log)
            warm = next(s for s in scenarios if s.key == "pw-warm")
            if not warm.skipped:
                log("filling the warm cache (not counted)")
                first = _measure(warm, -1, work)
                if not first.ok:
                    warm.skipped = f"the warm-up run failed: {first.status}"
            active = [s for s in scenarios if not s.skipped]
            runs: list[RunResult] = []
            for rnd in range(cfg.runs):
                shift = rnd % max(len(active), 1)
                for scenario in active[shift:] + active[:shift]:
                    result = _measure(scenario, rnd, work)
                    runs.append(result)
                    log(
                        f"round {rnd + 1}/{cfg.runs} {scenario.key}: "
                        + (
                            f"ready {result.ready_s:.2f} s, first token "
                            f"{result.first_token_s:.2f} s, peak private "
                            f"{(result.peak_private or 0) / 2**20:.0f} MiB"
                            if result.ok
                            else result.status
                        )
                    )
            setup = {
                "model": cfg.model,
                "gguf_bytes": gguf.stat().st_size,
                "prompt_tokens": len(prompt),
                "http_server": server.kind,
                **{k: v for k, v in asdict(cfg).items() if k in ("runs", "context", "threads")},
            }
        return BenchResult(cfg, scenarios, runs, setup)
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)
