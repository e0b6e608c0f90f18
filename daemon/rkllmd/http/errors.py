"""The one mapping from RkllmdError to HTTP status and the OpenAI error shape."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .. import errors as e

_STATUS: dict[type[e.RkllmdError], int] = {
    e.InvalidParams: 400,
    e.AmbiguousModel: 400,
    e.NoModelLoaded: 400,
    e.AuthenticationFailed: 401,
    e.Forbidden: 403,
    e.ModelNotFound: 404,
    e.ResponseNotFound: 404,
    e.RouteNotFound: 404,
    e.MethodNotAllowed: 405,
    e.RequestTimeout: 408,
    e.ModelInUse: 409,
    e.ModelPinned: 409,
    e.PayloadTooLarge: 413,
    e.UnsupportedMediaType: 415,
    e.NotAvailable: 501,
    e.StructuredOutputFailed: 422,  # not retried by clients: the model could not comply
    e.RepoNotFound: 404,
    e.PullFailed: 502,  # the Hub failed or sent something unusable
    e.ImageFetchFailed: 502,  # an allowed image URL's server failed
    e.ImageFetchTimeout: 504,
    e.InsufficientStorage: 507,
    e.StorageError: 507,  # read-only or not writable by the daemon
    e.QueueFull: 503,
    e.ShuttingDown: 503,
    e.Aborted: 503,
    e.RkllmdError: 500,
}

_TYPES = {401: "authentication_error", 403: "permission_error"}


def http_status(error: e.RkllmdError) -> int:
    if isinstance(error, e.LoadFailed) and "limit" in error.details:
        return 400  # the request asked for more context than the model has
    for cls in type(error).__mro__:
        status = _STATUS.get(cls)
        if status is not None:
            return status
    return 500


def error_body(error: e.RkllmdError, param: str | None = None) -> dict[str, Any]:
    status = http_status(error)
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    body: dict[str, Any] = {
        "message": error.message,
        "type": kind,
        "param": param or error.details.get("param"),
        "code": error.code,
    }
    extra = {k: v for k, v in error.details.items() if k not in ("code", "param")}
    if extra:
        body["details"] = extra
    return {"error": body}


def error_headers(error: e.RkllmdError) -> dict[str, str]:
    """The headers of an error answer, whatever its body's shape."""
    status = http_status(error)
    if isinstance(error, e.QueueFull):
        return {"Retry-After": str(error.retry_after)}
    if status < 500 and status != 408:
        # openai-python retries 408/409/429/5xx unless told not to.
        return {"x-should-retry": "false"}
    return {}


def ollama_error_response(error: e.RkllmdError) -> web.Response:
    """Ollama's shape, ``{"error": "<message>"}`` with the same status code; ``code``
    (ours, stable) rides along for clients that want it."""
    headers = {"Retry-After": str(error.retry_after)} if isinstance(error, e.QueueFull) else {}
    return web.Response(
        status=http_status(error),
        text=json.dumps({"error": error.message, "code": error.code}),
        content_type="application/json",
        headers=headers,
    )


def error_response(error: e.RkllmdError, param: str | None = None) -> web.Response:
    status = http_status(error)
    headers = error_headers(error)
    return web.Response(
        status=status,
        # TabbyAPI's Go client reads a top-level ``message``; OpenAI clients read ``error``.
        text=json.dumps({**error_body(error, param), "message": error.message}),
        content_type="application/json",
        headers=headers,
    )
