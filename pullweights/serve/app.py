"""The aiohttp application: OpenAI routes, ``/health``, ``/metrics``, API key, errors.

Routes:

=============================  ==========================================================
``GET /v1/models``             the served models (``/v1/models/{name}``: one)
``POST /v1/chat/completions``  chat (streaming or not), see :mod:`.completions`
``POST /v1/completions``       text completion (streaming or not)
``GET /health``                ``{"status": "ok", "models": {name: state}}``; no API key
``GET /metrics``               counters, slots and memory, Prometheus text format
=============================  ==========================================================

With an API key, every route but ``/health`` needs ``Authorization: Bearer KEY``. Every
error — a refused request, an unknown route, a failure while answering — is an OpenAI
error body (:class:`~pullweights.serve.protocol.ApiError`).

Example::

    app = create_app(ModelRegistry([ServedModel("tiny", "tiny.gguf", loader)]))
    web.run_app(app, host="127.0.0.1", port=8000, handler_cancellation=True)
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from aiohttp import web

from pullweights.errors import PullWeightsError
from pullweights.serve.completions import Completions
from pullweights.serve.metrics import Metrics
from pullweights.serve.protocol import ApiError, error_response
from pullweights.serve.registry import ModelRegistry, ServedModel

__all__ = ["REGISTRY", "create_app"]

log = logging.getLogger("pullweights.serve")

REGISTRY = web.AppKey("registry", ModelRegistry)
METRICS = web.AppKey("metrics", Metrics)

#: Largest request body accepted (long chats with many turns fit easily).
MAX_BODY = 16 * 1024 * 1024


def create_app(registry: ModelRegistry, *, api_key: str | None = None) -> web.Application:
    """The server's application over ``registry`` (run it with handler cancellation, so a
    client that disconnects cancels its generation)."""
    metrics = Metrics()
    app = web.Application(middlewares=[_errors(metrics), _auth(api_key)], client_max_size=MAX_BODY)
    app[REGISTRY] = registry
    app[METRICS] = metrics
    completions = Completions(registry, metrics)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/models/{name}", _model)
    app.router.add_post("/v1/chat/completions", completions.chat)
    app.router.add_post("/v1/completions", completions.completion)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    return app


def _model_object(entry: ServedModel) -> dict[str, Any]:
    return {
        "id": entry.name,
        "object": "model",
        "created": entry.created,
        "owned_by": "pullweights",
    }


async def _models(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    return web.json_response({"object": "list", "data": [_model_object(m) for m in registry]})


async def _model(request: web.Request) -> web.Response:
    entry = request.app[REGISTRY].entry(request.match_info["name"])
    return web.json_response(_model_object(entry))


async def _health(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    states = {m.name: "loaded" if m.model is not None else "not loaded" for m in registry}
    return web.json_response({"status": "ok", "models": states})


async def _metrics(request: web.Request) -> web.Response:
    page = request.app[METRICS].render(request.app[REGISTRY])
    return web.Response(text=page, content_type="text/plain", charset="utf-8")


def _errors(metrics: Metrics) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        try:
            response: web.StreamResponse = await handler(request)
        except ApiError as exc:
            response = error_response(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = error_response(ApiError(exc.status, exc.reason, code=_code(exc.status)))
        except PullWeightsError as exc:
            log.exception("request failed: %s %s", request.method, request.path)
            response = error_response(ApiError(500, str(exc), type="server_error"))
        except Exception as exc:  # the server boundary: a bug answers 500, never a traceback
            log.exception("request failed: %s %s", request.method, request.path)
            message = f"internal error: {type(exc).__name__}: {exc}"
            response = error_response(ApiError(500, message, type="server_error"))
        metrics.finished(route, response.status)
        return response

    return middleware


def _code(status: int) -> str | None:
    return {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(status)


def _auth(api_key: str | None) -> Any:
    expected = f"Bearer {api_key}".encode() if api_key else None

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if expected is not None and request.path != "/health":
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                raise ApiError(
                    401,
                    "Incorrect or missing API key (send 'Authorization: Bearer KEY')",
                    code="invalid_api_key",
                )
        result: web.StreamResponse = await handler(request)
        return result

    return middleware
