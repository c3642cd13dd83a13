"""The GGUF fuzzer: mutated model files through ``inspect`` and the loaders, each input in
a worker process under a memory limit and a timeout.

Seeds are the tiny models of :mod:`tests.reference.tiny_models` (gemma3, qwen2, llama,
with real weights: the whole ``run`` path) and, when the ``demo`` / ``qwen`` extras are
installed, the real models' headers over a hole of zeros (the metadata path: config,
tensor checks, the 262k- and 152k-entry tokenizers, the real chat template). Input ``i``
of a run with seed ``s`` is drawn from ``random.Random(s * 1_000_003 + i)``, so a run is
reproducible and any input can be rebuilt from its number.

Each input's outcome is one of: ``ok``; ``error`` (one typed pullweights error); and the
failures ``traceback`` (another exception escaped), ``memory`` (a MemoryError escaped,
or a peak RSS above ``--rss-limit``), ``crash`` (the worker died, e.g. SIGSEGV, SIGABRT,
SIGBUS), ``hang`` (no answer within ``--timeout``: the worker is killed) and ``wrong``
(a neutral mutation — an unknown metadata key added — changed the generated text).

    python -m tests.fuzz --inputs 10000 --seed 1 --out fuzz-run     # the long run
    python -m tests.fuzz --inputs 40 --seed 0 --tiny-only            # what CI runs

The summary (counts per outcome, per seed, per error type; failures with their
operations) is printed and written to ``OUT/summary.json``; each failing input's
operations go to ``OUT/failures.jsonl`` (replay them with :func:`replay`).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tests.fuzz.image import Image, read_image
from tests.fuzz.mutations import Op, apply, draw, is_neutral

ROOT = Path(__file__).resolve().parents[2]
FAILURES = ("traceback", "memory", "crash", "hang", "wrong")


@dataclass
class Seed:
    name: str
    kind: str  # "tiny" or "header"
    image: Image
    weight: float


def tiny_seeds(directory: Path) -> list[Seed]:
    """The tiny models, written into ``directory``."""
    from tests.reference import write_tiny_model

    seeds = []
    for arch, quant in (("gemma3", None), ("qwen2", "Q8_0"), ("llama", None)):
        path = write_tiny_model(directory / f"seed-{arch}.gguf", arch, quant=quant)  # type: ignore[arg-type]
        seeds.append(Seed(f"tiny-{arch}", "tiny", read_image([path], keep_data=True), 1.0))
    return seeds


def header_seeds() -> list[Seed]:
    """The installed real models' headers (none when the extras are not installed)."""
    from pullweights.errors import PullWeightsError
    from pullweights.gguf.installed import installed_model_parts

    seeds = []
    for name in ("gemma3-270m", "qwen2.5-coder-0.5b"):
        try:
            parts = installed_model_parts(name)
        except PullWeightsError:
            continue
        seeds.append(Seed(f"header-{name}", "header", read_image(parts, keep_data=False), 0.25))
    return seeds


def fresh(image: Image) -> Image:
    """A copy of ``image`` that operations can change without touching it."""
    return replace(
        image,
        entries=[replace(e) for e in image.entries],
        tensors=[replace(t, dims=list(t.dims)) for t in image.tensors],
        patches=[],
        truncate=None,
    )


class Worker:
    """One worker process (restarted after a crash or a hang)."""

    def __init__(self, address_space: int, log: Path) -> None:
        self.address_space = address_space
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        read_fd, write_fd = os.pipe()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PULLWEIGHTS_EVENTS": ""}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.fuzz.worker",
                    "--answer-fd",
                    str(write_fd),
                    "--address-space",
                    str(self.address_space),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=log,
                pass_fds=(write_fd,),
                cwd=ROOT,
                env=env,
                start_new_session=True,
            )
        os.close(write_fd)
        self.answers = os.fdopen(read_fd, "rb")
        self.buffer = b""
        ready = self._read(120.0)
        if ready is None or not ready.get("ready"):
            raise RuntimeError(f"fuzz worker did not start (see {self.log})")

    def _read(self, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.answers, selectors.EVENT_READ)
            while b"\n" not in self.buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return None
                chunk = os.read(self.answers.fileno(), 1 << 16)
                if not chunk:
                    return {"eof": True}
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def run(self, job: dict[str, Any], timeout: float) -> dict[str, Any]:
        if self.process is None:
            self.start()
        assert self.process is not None and self.process.stdin is not None
        try:
            self.process.stdin.write((json.dumps(job) + "\n").encode())
            self.process.stdin.flush()
        except BrokenPipeError:
            return self._died()
        answer = self._read(timeout)
        if answer is None:
            self.stop()
            return {"outcome": "hang", "detail": f"no answer in {timeout:g} s"}
        if answer.get("eof"):
            return self._died()
        return answer

    def _died(self) -> dict[str, Any]:
        assert self.process is not None
        code = self.process.wait()
        self._close()
        name = signal.Signals(-code).name if code < 0 else f"exit {code}"
        return {"outcome": "crash", "detail": name}

    def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self._close()

    def _close(self) -> None:
        assert self.process is not None
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        self.answers.close()
        self.process = None


@dataclass
class Summary:
    inputs: int = 0
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    by_seed: dict[str, collections.Counter[str]] = field(default_factory=dict)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    warnings: collections.Counter[str] = field(default_factory=collections.Counter)
    neutral: int = 0
    peak_rss: int = 0
    seconds: float = 0.0
    failures: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "outcomes": dict(self.outcomes),
            "failures": {kind: self.outcomes.get(kind, 0) for kind in FAILURES},
            "by_seed": {k: dict(v) for k, v in self.by_seed.items()},
            "error_types": dict(self.errors.most_common(40)),
            "warnings": dict(self.warnings.most_common(20)),
            "neutral_inputs": self.neutral,
            "peak_rss_mib": self.peak_rss >> 20,
            "seconds": round(self.seconds, 1),
            "failed_inputs": self.failures[:200],
        }


def _error_kind(answer: dict[str, Any], path: Path) -> str:
    """``stage: message start`` of an error, the input's path left out (for the summary)."""
    detail = str(answer.get("detail", "")).removeprefix("pullweights: error: ")
    detail = detail.replace(str(path), "FILE").replace(str(path.parent), "DIR")
    words = " ".join(re.sub(r"[0-9]+", "N", detail).split()[:6])
    return f"{answer.get('stage', '?')}: {words[:70]}"


def fuzz(
    n_inputs: int,
    *,
    seed: int = 0,
    out: Path | None = None,
    tiny_only: bool = False,
    timeout: float = 60.0,
    address_space: int = 8 << 30,
    rss_limit: int = 3 << 29,
    start: int = 0,
    progress: bool = False,
    cases: list[tuple[str, list[Op]]] | None = None,
) -> Summary:
    """Run inputs ``start .. start + n_inputs - 1`` of the run ``seed``, then ``cases``
    (``(seed name, operations)``, e.g. the stored regressions); see the module docs."""
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pullweights-fuzz-") as tmp_name:
        tmp = Path(tmp_name)
        out = out or tmp / "out"
        out.mkdir(parents=True, exist_ok=True)
        seeds = tiny_seeds(tmp) + ([] if tiny_only else header_seeds())
        by_name = {s.name: s for s in seeds}
        worker = Worker(address_space, out / "worker.log")
        summary = Summary()
        baselines: dict[tuple[str, bool], str] = {}

        def inputs() -> Iterator[tuple[int, Seed, list[Op]]]:
            for i in range(start, start + n_inputs):
                rng = random.Random(seed * 1_000_003 + i)
                s = rng.choices(seeds, weights=[x.weight for x in seeds])[0]
                yield i, s, draw(rng, s.image)
            for j, (name, ops) in enumerate(cases or []):
                if name in by_name:  # a header case needs its extra installed
                    yield -1 - j, by_name[name], ops

        try:
            for s in seeds:  # the unmutated seeds must work; their text is the baseline
                path = s.image.write(tmp / f"base-{s.name}.gguf")
                for chat in (True, False):
                    job = {"path": str(path), "kind": s.kind, "chat": chat}
                    answer = worker.run(job, timeout * 2)
                    if answer["outcome"] != "ok":
                        raise RuntimeError(f"seed {s.name} does not run: {answer}")
                    baselines[s.name, chat] = answer["text"]
                path.unlink()
            with open(out / "failures.jsonl", "a") as failures_file:
                for count, (i, s, ops) in enumerate(inputs(), 1):
                    path = apply(fresh(s.image), ops).write(tmp / "input.gguf")
                    chat = i % 2 == 0 or i < 0  # a chat prompt (always for stored cases), or text
                    job = {"path": str(path), "kind": s.kind, "chat": chat}
                    answer = worker.run(job, timeout)
                    outcome = answer["outcome"]
                    if outcome == "ok" and is_neutral(ops):
                        summary.neutral += 1
                        if answer["text"] != baselines[s.name, chat]:
                            outcome = "wrong"
                    if answer.get("peak_rss", 0) > rss_limit:
                        outcome = "memory"
                    summary.inputs += 1
                    summary.outcomes[outcome] += 1
                    summary.by_seed.setdefault(s.name, collections.Counter())[outcome] += 1
                    summary.peak_rss = max(summary.peak_rss, answer.get("peak_rss", 0))
                    for w in answer.get("warnings", []):
                        summary.warnings[w] += 1
                    if outcome == "error":
                        summary.errors[_error_kind(answer, path)] += 1
                    if outcome in FAILURES:
                        record = {"index": i, "seed": s.name, "chat": chat, "ops": ops, **answer}
                        record["outcome"] = outcome
                        summary.failures.append(record)
                        failures_file.write(json.dumps(record) + "\n")
                        failures_file.flush()
                    if progress and count % 100 == 0:
                        print(
                            f"{count} inputs: {dict(summary.outcomes)}", file=sys.stderr, flush=True
                        )
        finally:
            worker.stop()
        summary.seconds = time.monotonic() - began
        (out / "summary.json").write_text(json.dumps(summary.as_dict(), indent=1) + "\n")
    return summary


def replay(seed_name: str, ops: list[Op], directory: Path) -> tuple[str, Path]:
    """Write the input ``ops`` make of seed ``seed_name``; returns its kind and path."""
    seeds = {s.name: s for s in tiny_seeds(directory)}
    if seed_name not in seeds:
        seeds.update({s.name: s for s in header_seeds()})
    s = seeds[seed_name]
    return s.kind, apply(fresh(s.image), ops).write(directory / "replay.gguf")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--inputs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="first input number")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--tiny-only", action="store_true", help="no real-model headers")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per input")
    parser.add_argument("--address-space", type=int, default=8 << 30, help="worker RLIMIT_AS")
    parser.add_argument("--rss-limit", type=int, default=3 << 29, help="peak RSS per input")
    args = parser.parse_args(argv)
    summary = fuzz(
        args.inputs,
        seed=args.seed,
        out=args.out,
        tiny_only=args.tiny_only,
        timeout=args.timeout,
        address_space=args.address_space,
        rss_limit=args.rss_limit,
        start=args.start,
        progress=True,
    )
    report = summary.as_dict()
    report["failed_inputs"] = report["failed_inputs"][:20]
    print(json.dumps(report, indent=1))
    return 1 if any(summary.outcomes.get(kind) for kind in FAILURES) else 0
