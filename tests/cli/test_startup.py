"""What ``pullweights run`` imports for a local model: not the HTTP stack (aiohttp takes
~0.15 s to import, a tenth of a warm run), which loads only when a URL is opened."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.reference import write_tiny_model

_PROBE = """
import sys
from pullweights.cli import main
args = ["--no-cache", "--quiet", "--greedy", "--max-tokens", "2"]
rc = main(["run", sys.argv[1], "Paris is", *args])
assert rc == 0, rc
print(sorted(m for m in sys.modules if m.split(".")[0] in ("aiohttp", "yarl", "multidict")))
"""


def test_a_local_run_does_not_import_the_http_stack(tmp_path: Path) -> None:
    model = write_tiny_model(tmp_path / "tiny.gguf", "qwen2", quant="Q8_0")
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(model)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    imported = done.stdout.strip().splitlines()[-1]
    assert "aiohttp" not in imported, imported
