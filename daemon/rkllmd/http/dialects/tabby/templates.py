"""TabbyAPI's template routes: list the names, switch the resident model's template,
go back to the model's own (``/v1/template/*`` and the Go client's ``/v1/templates*``).

Switching reloads the resident model with the same options and another template:
the template is part of what a load asks for, and loading with other options
reloads. The model keeps serving until the new load has finished.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Annotated

from aiohttp import web
from pydantic import Field

from ....requests import LoadOptions
from ....templates import TemplateLibrary
from ...edge import read_body
from ...routing import Route
from ...schemas import Body
from ...services import Services, services
from .models import is_admin, resident_of
from .shapes import template_name


class TemplateSwitchRequest(Body):
    prompt_template_name: Annotated[str, Field(min_length=1, max_length=255)]


def _library(svc: Services) -> TemplateLibrary:
    return TemplateLibrary(svc.config.current.templates_dir)


async def list_templates(request: web.Request) -> web.Response:
    """Every name for the admin key; the resident model's template for an API key."""
    svc = services(request)
    if is_admin(request):
        names = await asyncio.to_thread(_library(svc).names)
    else:
        status = svc.manager.status()
        names = [template_name(status.resident)] if status.resident else []
    return web.json_response({"object": "list", "data": names})


async def _reload(svc: Services, options: LoadOptions) -> web.Response:
    resident = resident_of(svc)
    status = await svc.manager.load(resident.entry.id, options)
    loaded = status.resident
    name = template_name(loaded) if loaded else None
    return web.json_response({"model": status.model, "prompt_template": name})


async def switch(request: web.Request) -> web.Response:
    svc = services(request)
    body = await read_body(request, TemplateSwitchRequest, svc.config.current.http)
    resident = resident_of(svc)
    template = await asyncio.to_thread(_library(svc).get, body.prompt_template_name)
    options = dataclasses.replace(
        resident.options, chat_template=template.text, chat_template_name=template.name
    )
    return await _reload(svc, options)


async def unload(request: web.Request) -> web.Response:
    svc = services(request)
    resident = resident_of(svc)
    options = dataclasses.replace(resident.options, chat_template=None, chat_template_name=None)
    return await _reload(svc, options)


ROUTES = (
    Route("GET", "/v1/template/list", list_templates, "TabbyAPI: template names"),
    Route("GET", "/v1/templates", list_templates, "TabbyAPI (Go client): template names"),
    Route(
        "POST",
        "/v1/template/switch",
        switch,
        "TabbyAPI: switch the loaded model's template (reloads it)",
        TemplateSwitchRequest,
        admin=True,
    ),
    Route(
        "POST",
        "/v1/templates/switch",
        switch,
        "TabbyAPI (Go client): switch the template",
        TemplateSwitchRequest,
        admin=True,
    ),
    Route(
        "POST",
        "/v1/template/unload",
        unload,
        "TabbyAPI: back to the model's own template",
        admin=True,
    ),
    Route(
        "DELETE",
        "/v1/templates/active",
        unload,
        "TabbyAPI (Go client): back to the model's own template",
        admin=True,
    ),
)
