"""The HTTP app in-process (pytest-aiohttp) over the real manager, worker and SmolLM2."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from rkllmd.catalog.registry import ModelRegistry
from rkllmd.config import Config, LiveConfig
from rkllmd.http.app import build_app
from rkllmd.http.services import SERVICES, Services
from rkllmd.manager import ModelManager
from rkllmd.residency import SpawnWorker
from rkllmd.worker.proxy import WorkerProcess

from tests.helpers import MODEL_ID

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def make_client(aiohttp_client, smol_dir: Path) -> AsyncIterator[MakeClient]:  # type: ignore[no-untyped-def]
    managers: list[ModelManager] = []

    async def make(
        load: bool = True, spawn: SpawnWorker | None = None, **overrides: Any
    ) -> TestClient[Any, Any]:
        """A client of a fresh app; ``spawn`` replaces how workers are started."""
        http = {"listen": "127.0.0.1:8080", **overrides.pop("http", {})}
        config = LiveConfig(
            Config.model_validate({"models_dir": smol_dir, "http": http, **overrides})
        )
        registry = ModelRegistry(smol_dir, settle_seconds=0.2)
        await registry.scan()
        manager = ModelManager(config, registry, spawn or WorkerProcess.spawn)
        managers.append(manager)
        if load:
            await manager.load(MODEL_ID)
        client: TestClient[Any, Any] = await aiohttp_client(
            build_app(Services(manager, registry, config))
        )
        return client

    yield make
    for manager in managers:
        await manager.shutdown(0)


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient[Any, Any]:
    return await make_client()


def chat_body(content: str = "Say hello", **extra: Any) -> dict[str, Any]:
    return {
        "model": "smollm2",
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        **extra,
    }


def sse_events(text: str) -> list[Any]:
    import json

    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        payload = block[len("data: ") :]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def manager_of(client: TestClient[Any, Any]) -> ModelManager:
    return client.server.app[SERVICES].manager
