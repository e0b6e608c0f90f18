"""What handlers reach through the app: the manager and friends, typed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..config import Config
from ..manager import ModelManager
from ..registry import ModelRegistry


@dataclass(frozen=True, slots=True)
class Services:
    manager: ModelManager
    registry: ModelRegistry
    config: Callable[[], Config]  # re-read on each request so SIGHUP changes apply
    store: Any = None  # the model store (downloads), when this build has one


SERVICES = web.AppKey("services", Services)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]
