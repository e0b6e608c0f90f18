"""What handlers reach through the app: the manager and friends, typed."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from ..catalog.registry import ModelRegistry
from ..config import LiveConfig
from ..manager import ModelManager
from ..store import ModelStore


@dataclass(frozen=True, slots=True)
class Services:
    manager: ModelManager
    registry: ModelRegistry
    config: LiveConfig  # read per request (``config.current``): SIGHUP changes apply
    store: ModelStore | None = None


SERVICES = web.AppKey("services", Services)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]
