"""TabbyAPI's LoRA routes (``/v1/lora*`` and the Go client's ``/v1/loras*``).

Adapters are the files of the models dir's ``lora/`` folder (``catalog/loras.py``):
``*.gguf`` for GGUF models, ``*.rkllm`` for .rkllm models (one at a time on the NPU).
Applying or removing adapters reloads the resident model with the same options and
the new set of adapters (a load with other options reloads); the model serves until
the new load is ready, and a load that fails brings the previous one back.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Annotated, Any

from aiohttp import web
from pydantic import Field, StrictBool

from .... import errors as e
from ....catalog.loras import Adapter, list_adapters
from ....views import Resident
from ....wire import NUMBER
from ...edge import read_body
from ...routing import Route
from ...schemas import Body
from ...services import Services, services
from .models import is_admin, resident_of
from .shapes import OWNER


class LoraLoadInfo(Body):
    name: Annotated[str, Field(min_length=1, max_length=255)]
    scaling: Annotated[float, Field(ge=-100.0, le=100.0), NUMBER] = 1.0


class LoraLoadRequest(Body):
    loras: Annotated[list[LoraLoadInfo], Field(min_length=1, max_length=8)]
    skip_queue: StrictBool = False


def _card(name: str, created: int, scaling: float | None = None) -> dict[str, Any]:
    card: dict[str, Any] = {"id": name, "object": "lora", "created": created, "owned_by": OWNER}
    if scaling is not None:
        card["scaling"] = scaling
    return card


def _active_cards(resident: Resident | None) -> list[dict[str, Any]]:
    if resident is None:
        return []
    created = int(resident.loaded_at.timestamp())
    return [_card(name, created, scale) for name, scale in resident.options.loras]


async def _adapters(svc: Services) -> dict[str, Adapter]:
    found = await asyncio.to_thread(list_adapters, svc.config.current.models_dir)
    return {a.name: a for a in found}


async def list_loras(request: web.Request) -> web.Response:
    """Every adapter for the admin key; the applied ones for an API key (TabbyAPI)."""
    svc = services(request)
    if not is_admin(request):
        cards = _active_cards(svc.manager.status().resident)
    else:
        cards = [_card(a.name, int(a.mtime)) for a in (await _adapters(svc)).values()]
    return web.json_response({"object": "list", "data": cards})


async def active(request: web.Request) -> web.Response:
    resident = resident_of(services(request))
    return web.json_response({"object": "list", "data": _active_cards(resident)})


async def _reload(svc: Services, resident: Resident, loras: dict[str, float]) -> None:
    options = dataclasses.replace(resident.options, loras=tuple(loras.items()))
    await svc.manager.load(resident.entry.id, options)


async def load(request: web.Request) -> web.Response:
    """Apply adapters on top of those applied; answers TabbyAPI's success and failure
    lists (an adapter that does not exist or does not fit the model's format fails)."""
    svc = services(request)
    body = await read_body(request, LoraLoadRequest, svc.config.current.http)
    resident = resident_of(svc)
    adapters = await _adapters(svc)
    wanted = dict(resident.options.loras)
    success: list[str] = []
    failure: list[str] = []
    for info in body.loras:
        adapter = adapters.get(info.name)
        if adapter is None or adapter.format != resident.entry.format:
            failure.append(info.name)
            continue
        wanted[info.name] = info.scaling
        success.append(info.name)
    answer: dict[str, Any] = {}
    if success:
        try:
            await _reload(svc, resident, wanted)
        except e.LoadFailed as exc:  # the previous model is serving again (see manager)
            failure, success = failure + success, []
            answer["message"] = exc.message
    return web.json_response({"success": success, "failure": failure, **answer})


async def unload(request: web.Request) -> web.Response:
    svc = services(request)
    resident = resident_of(svc)
    if resident.options.loras:
        await _reload(svc, resident, {})
    return web.json_response({})


ROUTES = (
    Route("GET", "/v1/lora/list", list_loras, "TabbyAPI: LoRA adapters"),
    Route("GET", "/v1/loras", list_loras, "TabbyAPI (Go client): LoRA adapters"),
    Route("GET", "/v1/lora", active, "TabbyAPI: the applied LoRA adapters"),
    Route("GET", "/v1/loras/active", active, "TabbyAPI (Go client): the applied adapters"),
    Route(
        "POST",
        "/v1/lora/load",
        load,
        "TabbyAPI: apply LoRA adapters (reloads the model)",
        LoraLoadRequest,
        admin=True,
    ),
    Route(
        "POST",
        "/v1/loras/load",
        load,
        "TabbyAPI (Go client): apply LoRA adapters",
        LoraLoadRequest,
        admin=True,
    ),
    Route("POST", "/v1/lora/unload", unload, "TabbyAPI: remove the LoRA adapters", admin=True),
    Route(
        "DELETE",
        "/v1/loras/active",
        unload,
        "TabbyAPI (Go client): remove the LoRA adapters",
        admin=True,
    ),
)
