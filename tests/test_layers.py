"""The house's layering, checked on the source: data flows one way, and the model
builders use the public API."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]


def _imports(package: str) -> dict[str, set[str]]:
    """Every ``pullweights...`` module imported by each file of ``package`` (runtime and
    ``TYPE_CHECKING`` imports alike)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[str(path.relative_to(ROOT))] = {n for n in names if n.startswith("pullweights")}
    return found


def test_graph_building_imports_nothing_above_references() -> None:
    allowed = ("pullweights.graph", "pullweights.descriptor", "pullweights.dtypes")
    allowed += ("pullweights.errors", "pullweights.events", "pullweights.weights")
    bad = {
        path: sorted(n for n in names if not n.startswith(allowed))
        for path, names in _imports("pullweights/graph").items()
    }
    assert {p: n for p, n in bad.items() if n} == {}


def test_lower_layers_never_import_the_runtime_or_loaders() -> None:
    for package in ("pullweights/sources", "pullweights/gguf", "pullweights/cache"):
        for path, names in _imports(package).items():
            above = sorted(n for n in names if n.startswith(("pullweights.runtime", "loaders")))
            assert not above, f"{path} imports {above}"


def test_loaders_use_the_public_api() -> None:
    internal = ("pullweights.graph.lowering", "pullweights.runtime.pipeline")
    internal += ("pullweights.runtime.graph", "pullweights.graph.core")
    for path, names in _imports("loaders").items():
        used = sorted(n for n in names if n.startswith(internal))
        assert not used, f"{path} imports {used}"
