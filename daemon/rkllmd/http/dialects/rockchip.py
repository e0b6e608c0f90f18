"""RockchipLlama's model management: /v1/models/available|load|unload|loaded.

The guide in ../shared/seeds/000_* is the specification of these shapes.
"""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import Field, StrictBool

from ...requests import LoadOptions
from ...wire import NUMBER
from ..edge import read_body
from ..routing import Route
from ..schemas import Body, ModelName
from ..services import services

MIB = 1024 * 1024


class RockchipLoadRequest(Body):
    model: ModelName
    max_context_len: Annotated[int, Field(ge=1, le=1_048_576), NUMBER] | None = None
    num_npu_core: Annotated[int, Field(ge=1, le=3), NUMBER] | None = None
    pin: StrictBool | None = None


async def available(request: web.Request) -> web.Response:
    views = services(request).manager.list_models()
    listed = [
        {
            "name": v.entry.id,
            "size_mb": round(v.entry.size_bytes / MIB, 2),
            "loaded": v.loaded,
            "format": v.entry.format,
        }
        for v in views
    ]
    loaded = next((v.entry.id for v in views if v.loaded), None)
    return web.json_response({"models": listed, "total": len(listed), "loaded_model": loaded})


def _notes(body: RockchipLoadRequest, fmt: str) -> list[str]:
    """Say which requested parameters cannot apply instead of dropping them."""
    if body.num_npu_core is None:
        return []
    if fmt == "gguf":
        return ["num_npu_core does not apply: GGUF models run on the CPU"]
    return [
        "num_npu_core is fixed when the model is converted to .rkllm; "
        "the requested value was not applied"
    ]


async def load(request: web.Request) -> web.Response:
    svc = services(request)
    body = await read_body(request, RockchipLoadRequest, svc.config.current.http)
    entry = svc.registry.resolve(body.model)
    status = await svc.manager.load(
        body.model, LoadOptions(ctx_size=body.max_context_len), pin=body.pin
    )
    return web.json_response(
        {
            "success": True,
            "message": f"Model {status.model} loaded successfully",
            "model_name": status.model,
            "loaded": True,
            "notes": _notes(body, entry.format),
        }
    )


async def unload(request: web.Request) -> web.Response:
    manager = services(request).manager
    name = manager.status().model
    await manager.unload()
    return web.json_response(
        {"success": True, "message": f"Model {name} unloaded" if name else "No model was loaded"}
    )


async def loaded(request: web.Request) -> web.Response:
    status = services(request).manager.status()
    resident = status.resident if status.serving else None
    return web.json_response(
        {
            "loaded": resident is not None,
            "model_name": resident.entry.id if resident else None,
            # Relative to the models directory: the daemon never shows absolute paths.
            "model_path": resident.entry.relpath if resident else None,
            "state": status.state.value,
        }
    )


ROUTES = (
    Route("GET", "/v1/models/available", available, "RockchipLlama: models on disk"),
    Route("GET", "/v1/models/loaded", loaded, "RockchipLlama: the loaded model"),
    # POST /v1/models/load is shared with TabbyAPI's Go client: dialects/tabby/models.py
    # routes RockchipLlama's body (``model``) to ``load`` above.
    Route("POST", "/v1/models/unload", unload, "RockchipLlama: unload", admin=True),
)
