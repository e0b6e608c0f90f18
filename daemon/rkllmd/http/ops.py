"""Health, Prometheus metrics, and the API's own documentation."""

from __future__ import annotations

import html
import json
from typing import Any

from aiohttp import web

from ..views import LoadFailure, State
from .openapi import resolve_refs
from .routing import Route
from .services import services

UNHEALTHY = frozenset({State.LOADING, State.FAILED})


def load_failure_body(failure: LoadFailure | None) -> dict[str, Any] | None:
    """The last failed load; ``restored`` names the model loaded again in its place."""
    if failure is None:
        return None
    return {
        "model": failure.model,
        "code": failure.code,
        "reason": failure.reason,
        "at": failure.at.isoformat(),
        "restored": failure.restored,
    }


async def health(request: web.Request) -> web.Response:
    status = services(request).manager.status()
    unhealthy = status.state in UNHEALTHY
    body = {
        "status": "unavailable" if unhealthy else "ok",
        "state": status.state.value,
        "model": status.model,
        "reason": status.reason,
        "queue": {"waiting": status.queue.waiting, "max": status.queue.max},
        "load_failure": load_failure_body(status.load_failure),
        "slots": {
            "total": status.slots.total,
            "busy": status.slots.busy,
            "free": status.slots.free,
        },
    }
    return web.json_response(body, status=503 if unhealthy else 200)


async def metrics(request: web.Request) -> web.Response:
    payload = services(request).manager.metrics.render()
    return web.Response(
        body=payload, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    )


def docs_page(spec: dict[str, Any]) -> str:
    """A self-contained page (no CDN: boards are often offline); each body is shown
    with its references resolved, so it reads without the components section."""
    schemas = spec["components"]["schemas"]
    rows = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            schema = (
                op.get("requestBody", {})
                .get("content", {})
                .get("application/json", {})
                .get("schema")
            )
            shown = resolve_refs(schema, schemas)
            body = f"<pre>{html.escape(json.dumps(shown, indent=1))}</pre>" if schema else ""
            rows.append(
                f"<section><h3><code>{method.upper()} {html.escape(path)}</code></h3>"
                f"<p>{html.escape(op.get('summary', ''))}</p>{body}</section>"
            )
    title = html.escape(spec["info"]["title"])
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}pre{background:#f4f4f4;"
        "padding:.5em;overflow:auto}</style></head>"
        f"<body><h1>{title}</h1><p><a href='/openapi.json'>openapi.json</a></p>"
        f"{''.join(rows)}</body></html>"
    )


ROUTES = (
    Route("GET", "/health", health, "200 when serving, 503 while loading or failed"),
    Route("GET", "/v1/health", health, "Same as /health"),
    Route("GET", "/metrics", metrics, "Prometheus metrics"),
)
