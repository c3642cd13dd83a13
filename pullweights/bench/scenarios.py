"""The bench's scenarios: how each one is prepared once and how each run is started.

=================== ====================================================================
key                 what one run is (a fresh process)
=================== ====================================================================
``ort-embedded``    onnxruntime alone on ``pullweights export`` output, weights inside
                    the .onnx
``ort-external``    the same, weights as ONNX external data (memory-mapped by ORT)
``pw-cold``         pullweights from the local GGUF into an empty weight cache
``pw-http-cold``    pullweights from the GGUF over loopback HTTP (nginx, else aiohttp)
                    into an empty weight cache
``pw-warm``         pullweights from the local GGUF with the cache filled beforehand
``llama.cpp``       llama-cpp-python in its own virtualenv (``PULLWEIGHTS_LLAMACPP_PYTHON``)
``transformers``    transformers' GGUF loader (dequantizes to float32), when installed
=================== ====================================================================

Baselines (``ort-*``, ``llama.cpp``, ``transformers``) import nothing of pullweights
(:mod:`pullweights.bench.baseline_worker`); the pullweights scenarios run
:mod:`pullweights.profile.model_worker`. Every run loads the model, runs the same prompt
token ids once and picks the first token.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pullweights.profile.model_worker import worker_command

__all__ = [
    "DEFAULT_LLAMACPP_PYTHON",
    "ENV_LLAMACPP_PYTHON",
    "Scenario",
    "llamacpp_python",
]

ENV_LLAMACPP_PYTHON = "PULLWEIGHTS_LLAMACPP_PYTHON"
DEFAULT_LLAMACPP_PYTHON = "/work/llamacpp-venv/bin/python"
BASELINE_WORKER = Path(__file__).with_name("baseline_worker.py")


@dataclass
class Scenario:
    """One way of loading the model, run in a fresh process per run.

    ``command(run_dir)`` returns the argv of one run; ``run_dir`` is an empty directory
    that exists for that run only (a cold scenario puts its weight cache there).
    """

    key: str
    title: str
    baseline: bool
    command: Callable[[Path], list[str]]
    #: Why the scenario cannot run here ("" when it can).
    skipped: str = ""
    notes: list[str] = field(default_factory=list)


def llamacpp_python() -> tuple[str | None, str]:
    """The Python of llama.cpp's virtualenv and "" — or None and why not."""
    python = os.environ.get(ENV_LLAMACPP_PYTHON) or (
        DEFAULT_LLAMACPP_PYTHON if os.path.exists(DEFAULT_LLAMACPP_PYTHON) else ""
    )
    if not python:
        return None, f"{ENV_LLAMACPP_PYTHON} is not set"
    try:
        subprocess.run(
            [python, "-c", "import llama_cpp"], check=True, capture_output=True, timeout=120
        )
    except (OSError, subprocess.SubprocessError):
        return None, f"{python} cannot import llama_cpp"
    return python, ""


def _request(run_dir: Path, **fields: object) -> str:
    path = run_dir / "request.json"
    path.write_text(json.dumps(fields))
    return str(path)


def baseline(
    key: str, title: str, python: str, runtime: str, model: Path, prompt: list[int],
    threads: int, context: int,
) -> Scenario:  # fmt: skip
    """A baseline run by :mod:`pullweights.bench.baseline_worker`."""

    def command(run_dir: Path) -> list[str]:
        request = _request(
            run_dir, runtime=runtime, model=str(model), prompt_ids=prompt, threads=threads,
            context=context,
        )  # fmt: skip
        return [python, str(BASELINE_WORKER), request]

    return Scenario(key, title, True, command)


def pullweights(
    key: str, title: str, model: str, prompt: list[int], context: int,
    cache: Callable[[Path], str],
) -> Scenario:  # fmt: skip
    """A pullweights run of ``model`` with the weight cache ``cache(run_dir)``."""

    def command(run_dir: Path) -> list[str]:
        args = worker_command(
            model, prompt_ids=prompt, max_tokens=1, cache_dir=cache(run_dir), context=context,
            quiet=True,
        )  # fmt: skip
        return [sys.executable, *args]

    return Scenario(key, title, False, command)


def transformers_available() -> str:
    """ "" when transformers and torch can be imported here, else why not."""
    missing = [m for m in ("transformers", "torch") if importlib.util.find_spec(m) is None]
    return f"{' and '.join(missing)} not installed" if missing else ""


def assemble(parts: list[Path], out: Path) -> Path:
    """One file of the GGUF ``parts`` (a single part is linked, not copied)."""
    if len(parts) == 1:
        out.symlink_to(parts[0].resolve())
        return out
    tmp = out.with_suffix(".tmp")
    with open(tmp, "wb") as sink:
        for part in parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, sink, 64 << 20)
    tmp.replace(out)
    return out


def empty_dir(parent: Path, prefix: str) -> Path:
    """A new empty directory under ``parent``."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
