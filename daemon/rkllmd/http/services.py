"""What handlers reach through the app: the manager and friends, typed."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from ..catalog.registry import ModelRegistry
from ..config import LiveConfig
from ..manager import ModelManager
from ..store import ModelStore
from .response_store import ResponseStore


@dataclass(frozen=True, slots=True)
class Services:
    manager: ModelManager
    registry: ModelRegistry
    config: LiveConfig  # read per request (``config.current``): SIGHUP changes apply
    store: ModelStore | None = None
    # The Responses API's stored answers (previous_response_id, GET /v1/responses/{id}).
    responses: ResponseStore = field(default_factory=ResponseStore)


SERVICES = web.AppKey("services", Services)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]
