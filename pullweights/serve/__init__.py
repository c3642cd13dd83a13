"""An OpenAI-compatible HTTP server for GGUF LLMs, on aiohttp (``pullweights serve``).

:func:`create_app` builds the application over a :class:`ModelRegistry` of models named
as on the command line; :func:`serve` runs it. Concurrent requests generate in the models'
KV cache slots (:mod:`loaders.slots`); see :mod:`pullweights.serve.app` for the routes.

Example (any OpenAI client)::

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    reply = client.chat.completions.create(
        model="gemma3-270m", messages=[{"role": "user", "content": "Hi!"}]
    )
"""

from __future__ import annotations

from pullweights.serve.app import create_app
from pullweights.serve.registry import ModelRegistry, ServedModel, parse_model_arg
from pullweights.serve.server import serve

__all__ = ["ModelRegistry", "ServedModel", "create_app", "parse_model_arg", "serve"]
