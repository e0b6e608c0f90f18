"""TabbyAPI's sampler override routes (``/v1/sampling/override*``, and the Go client's
``/v1/sampler/overrides*``): list the presets, put one (or an inline set) in force,
and clear them. What the overrides do is ``presets.py``'s; they apply to every
generation, whatever the dialect."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from aiohttp import web
from pydantic import ConfigDict, Field

from .... import errors as e
from ....presets import ALIASES, FIELDS
from ....wire import SamplingFields
from ...edge import read_body
from ...routing import Route
from ...schemas import Body
from ...services import services
from .models import is_admin


def _overrides_schema() -> dict[str, Any]:
    """What ``overrides`` may hold, for /openapi.json: each sampling field (and
    TabbyAPI's aliases) with a value in the request field's range."""
    fields = SamplingFields.model_json_schema()["properties"]
    properties: dict[str, Any] = {}
    for name in sorted(FIELDS):
        for spelled in [name, *(a for a, n in ALIASES.items() if n == name)]:
            value = {"allOf": [fields[name]], "not": {"type": "null"}}
            spec: dict[str, Any] = {"override": value, "force": {"type": "boolean"}}
            if name == "stop":
                spec["additive"] = {"type": "boolean"}
            properties[spelled] = {
                "type": "object",
                "properties": spec,
                "required": ["override"],
                "additionalProperties": False,
            }
    return {"type": "object", "properties": properties, "additionalProperties": False}


class OverrideSwitchRequest(Body):
    """A preset name, or overrides given inline (``{field: {override, force?}}``)."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "anyOf": [
                {"required": ["preset"], "properties": {"preset": {"type": "string"}}},
                {"required": ["overrides"], "properties": {"overrides": {"type": "object"}}},
            ]
        },
    )

    preset: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    overrides: (
        Annotated[dict[str, Any], Field(max_length=64, json_schema_extra=_overrides_schema())]
        | None
    ) = None


def _answer(request: web.Request, presets: list[str]) -> web.Response:
    manager = services(request).manager
    return web.json_response({**manager.presets.to_wire(), "presets": presets})


async def list_overrides(request: web.Request) -> web.Response:
    """The overrides in force; the preset names for the admin key only (TabbyAPI)."""
    presets = services(request).manager.presets
    names = await asyncio.to_thread(presets.names) if is_admin(request) else []
    return _answer(request, names)


async def switch(request: web.Request) -> web.Response:
    svc = services(request)
    body = await read_body(request, OverrideSwitchRequest, svc.config.current.http)
    presets = svc.manager.presets
    if body.preset is not None:
        await asyncio.to_thread(presets.switch, body.preset)
    elif body.overrides is not None:
        presets.set_inline(body.overrides)
    else:
        raise e.InvalidParams("give a preset name or overrides", param="preset")
    return _answer(request, [])


async def unload(request: web.Request) -> web.Response:
    services(request).manager.presets.clear()
    return _answer(request, [])


ROUTES = (
    Route("GET", "/v1/sampling/override/list", list_overrides, "TabbyAPI: sampler overrides"),
    Route("GET", "/v1/sampling/overrides", list_overrides, "TabbyAPI: sampler overrides"),
    Route(
        "GET", "/v1/sampler/overrides", list_overrides, "TabbyAPI (Go client): sampler overrides"
    ),
    Route(
        "POST",
        "/v1/sampling/override/switch",
        switch,
        "TabbyAPI: put a sampler preset (or inline overrides) in force",
        OverrideSwitchRequest,
        admin=True,
    ),
    Route(
        "POST",
        "/v1/sampler/overrides/switch",
        switch,
        "TabbyAPI (Go client): switch the sampler overrides",
        OverrideSwitchRequest,
        admin=True,
    ),
    Route(
        "POST",
        "/v1/sampling/override/unload",
        unload,
        "TabbyAPI: clear the sampler overrides",
        admin=True,
    ),
    Route(
        "DELETE",
        "/v1/sampler/overrides/active",
        unload,
        "TabbyAPI (Go client): clear the sampler overrides",
        admin=True,
    ),
)
