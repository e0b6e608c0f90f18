"""ModelManager with a fake worker: single-flight loads, replacement, the bounded FIFO
queue, worker death and shutdown. No processes, no model, no sleeps on wall time."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

import pytest
from rkllmd.catalog.registry import ModelRegistry
from rkllmd.config import Config, LiveConfig
from rkllmd.errors import (
    BackendCrashed,
    LoadFailed,
    ModelHasNoVision,
    ModelNotFound,
    NoModelLoaded,
    QueueFull,
    ShuttingDown,
)
from rkllmd.manager import ModelManager, State
from rkllmd.props import ModelProps
from rkllmd.requests import (
    BackendDefaults,
    ChatMessage,
    DoneEvent,
    GenerateRequest,
    GenerationEvent,
    ImageInput,
    LoadOptions,
    TokenEvent,
    Usage,
)

REQUEST = GenerateRequest(messages=(ChatMessage("user", "hi"),))
_pids = itertools.count(4000)


class FakeWorker:
    """Just enough of WorkerProcess for the manager."""

    def __init__(self, factory: Factory, on_exit: Callable[[Any, str], None]) -> None:
        self.factory = factory
        self.on_exit = on_exit
        self.pid = next(_pids)
        self.exit_reason: str | None = None
        self.last_activity = time.monotonic()
        self.loaded: Path | None = None
        self.stopped = False
        self.woken = asyncio.Event()  # wakes a generation when the worker dies

    @property
    def alive(self) -> bool:
        return self.exit_reason is None

    async def load(
        self,
        path: Path,
        fmt: str,
        options: LoadOptions,
        defaults: BackendDefaults,
        deadline: float,
        root: Path | None = None,
    ) -> ModelProps:
        self.factory.loads.append(path.name)
        await self.factory.load_gate.wait()
        if path.name in self.factory.broken:
            raise LoadFailed("llama.cpp could not load the model")
        self.loaded = path
        n_ctx = options.ctx_size or defaults.ctx_size or 0
        vision = path.name in self.factory.seeing
        return ModelProps(
            "fake", "0", n_ctx, None, 1, None, "fallback", slots=self.factory.slots, vision=vision
        )

    async def generate(
        self, request: GenerateRequest, abort_grace: float
    ) -> AsyncGenerator[GenerationEvent, None]:
        yield TokenEvent("Hel")
        hold = asyncio.ensure_future(self.factory.generation_gate.wait())
        death = asyncio.ensure_future(self.woken.wait())
        await asyncio.wait({hold, death}, return_when=asyncio.FIRST_COMPLETED)
        hold.cancel()
        death.cancel()
        if not self.alive:
            raise BackendCrashed(self.exit_reason or "worker process died")
        yield TokenEvent("lo")
        yield DoneEvent("stop", Usage(prompt_tokens=1, completion_tokens=2))

    async def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        return [[1.0, 0.0] for _ in texts], len(texts)

    async def stop(self, grace: float) -> None:
        self.stopped = True
        self.exit_reason = self.exit_reason or "stopped"
        self.woken.set()

    def kill(self, reason: str | None = None) -> None:
        self.die(reason or "worker process killed by SIGKILL")

    def die(self, reason: str) -> None:
        """The child went away on its own (segfault, OOM)."""
        self.exit_reason = reason
        self.woken.set()
        if not self.stopped:
            self.on_exit(self, reason)


class Factory:
    """The fake ``spawn``: records every worker it starts; gates let tests hold things."""

    def __init__(self) -> None:
        self.workers: list[FakeWorker] = []
        self.loads: list[str] = []
        self.broken: set[str] = set()
        self.slots = 1  # generations each loaded model runs at once
        self.seeing: set[str] = set()  # model files loaded with vision
        self.load_gate = asyncio.Event()
        self.load_gate.set()
        self.generation_gate = asyncio.Event()
        self.generation_gate.set()

    async def __call__(self, on_exit: Callable[[Any, str], None]) -> Any:
        worker = FakeWorker(self, on_exit)
        self.workers.append(worker)
        return worker


def put(path: Path) -> None:
    path.write_bytes(b"GGUF\x03\x00\x00\x00")
    past = time.time() - 3600  # already settled
    os.utime(path, (past, past))


async def eventually(predicate: Callable[[], bool], what: str) -> None:
    """Let other tasks run until ``predicate`` holds (a generous deadline, not a timing)."""
    async with asyncio.timeout(10):
        while not predicate():
            await asyncio.sleep(0.001)


@pytest.fixture
async def registry(tmp_path: Path) -> ModelRegistry:
    for name in ("alpha.gguf", "beta.gguf"):
        put(tmp_path / name)
    reg = ModelRegistry(tmp_path)
    await reg.scan()
    return reg


@pytest.fixture
def factory() -> Factory:
    return Factory()


def make_manager(registry: ModelRegistry, factory: Factory, **settings: Any) -> ModelManager:
    config = Config.model_validate({"models_dir": registry.models_dir, **settings})
    return ModelManager(LiveConfig(config), registry, spawn=factory)


@pytest.fixture
def manager(registry: ModelRegistry, factory: Factory) -> ModelManager:
    return make_manager(registry, factory, queue={"max_waiting": 2})


async def generate(manager: ModelManager, model: str | None = None) -> str:
    async with manager.generation(REQUEST, model) as gen:
        return "".join([e.text async for e in gen.events if isinstance(e, TokenEvent)])


async def start_holding_generation(manager: ModelManager, factory: Factory) -> asyncio.Task[str]:
    """A generation that holds the slot until ``factory.generation_gate`` is set."""
    factory.generation_gate.clear()
    task = asyncio.create_task(generate(manager))
    await eventually(lambda: manager.state is State.GENERATING, "the generation to start")
    return task


# --- loads ---------------------------------------------------------------------------


async def test_load_makes_the_model_resident(manager: ModelManager, factory: Factory) -> None:
    status = await manager.load("alpha")
    assert status.state == "ready" and status.model == "alpha"
    assert status.worker_pid == factory.workers[0].pid
    assert [(m.entry.id, m.loaded) for m in manager.list_models()] == [
        ("alpha", True),
        ("beta", False),
    ]


async def test_concurrent_loads_of_one_model_are_single_flight(
    manager: ModelManager, factory: Factory
) -> None:
    factory.load_gate.clear()
    loads = [asyncio.create_task(manager.load(name)) for name in ("alpha", "ALPHA", "alpha.gguf")]
    await eventually(lambda: len(factory.loads) == 1, "the first load to start")
    for _ in range(20):
        await asyncio.sleep(0)
    assert manager.state is State.LOADING
    assert manager.status().queue.waiting == 0  # the others joined, not queued
    factory.load_gate.set()
    results = await asyncio.gather(*loads)
    assert len(factory.workers) == 1 and factory.loads == ["alpha.gguf"]
    assert {r.model for r in results} == {"alpha"}
    assert {r.worker_pid for r in results} == {factory.workers[0].pid}


async def test_concurrent_loads_share_one_failure(manager: ModelManager, factory: Factory) -> None:
    factory.broken.add("beta.gguf")
    factory.load_gate.clear()
    loads = [asyncio.create_task(manager.load("beta")) for _ in range(3)]
    await eventually(lambda: len(factory.loads) == 1, "the first load to start")
    factory.load_gate.set()
    outcomes = await asyncio.gather(*loads, return_exceptions=True)
    assert all(isinstance(o, LoadFailed) for o in outcomes)
    assert factory.loads == ["beta.gguf"]  # one attempt, not one per caller


async def test_loading_the_resident_model_again_spawns_nothing(
    manager: ModelManager, factory: Factory
) -> None:
    await manager.load("alpha")
    await manager.load("alpha")
    assert len(factory.workers) == 1


async def test_loading_another_model_replaces_the_resident_one(
    manager: ModelManager, factory: Factory
) -> None:
    await manager.load("alpha")
    status = await manager.load("beta")
    first, second = factory.workers
    assert first.stopped and not second.stopped
    assert status.model == "beta" and status.worker_pid == second.pid
    assert {m.entry.id: m.loaded for m in manager.list_models()} == {
        "alpha": False,
        "beta": True,
    }


async def test_failed_load_sets_failed_and_stops_its_worker(
    manager: ModelManager, factory: Factory
) -> None:
    factory.broken.add("beta.gguf")
    with pytest.raises(LoadFailed):
        await manager.load("beta")
    status = manager.status()
    assert status.state == "failed" and status.model == "beta"
    assert "could not load" in status.reason
    assert factory.workers[0].stopped
    assert (await manager.load("alpha")).state == "ready"
    assert manager.status().reason is None


async def test_unknown_model_fails_before_any_spawn(
    manager: ModelManager, factory: Factory
) -> None:
    with pytest.raises(ModelNotFound) as err:
        await manager.load("gamma")
    assert err.value.details["available"] == ["alpha", "beta"]
    assert factory.workers == []


async def test_unload(manager: ModelManager, factory: Factory) -> None:
    await manager.load("alpha")
    status = await manager.unload()
    assert status.state == "idle" and status.model is None
    assert factory.workers[0].stopped
    with pytest.raises(NoModelLoaded):
        await generate(manager)


# --- generation and the queue -------------------------------------------------------


async def test_generation_streams_and_counts(manager: ModelManager) -> None:
    await manager.load("alpha")
    assert await generate(manager) == "Hello"
    assert manager.state is State.READY
    counters = manager.status().counters
    assert counters["generations"] == counters["completed"] == 1
    assert counters["completion_tokens"] == 2


async def test_generation_naming_a_cold_model_loads_it(
    manager: ModelManager, factory: Factory
) -> None:
    await manager.load("alpha")
    assert await generate(manager, "beta") == "Hello"
    assert manager.status().model == "beta"
    assert factory.workers[0].stopped


async def test_full_queue_raises_queue_full_with_retry_after(
    registry: ModelRegistry, factory: Factory
) -> None:
    manager = make_manager(registry, factory, queue={"max_waiting": 1})
    await manager.load("alpha")
    running = await start_holding_generation(manager, factory)
    waiting = asyncio.create_task(generate(manager))
    await eventually(lambda: manager.status().queue.waiting == 1, "one waiter")

    with pytest.raises(QueueFull) as err:
        await generate(manager)
    assert isinstance(err.value.retry_after, int) and err.value.retry_after > 0
    assert err.value.to_data() == {"code": "queue_full", "retry_after": err.value.retry_after}

    # Administrative calls are not bounded by the queue: they wait their turn.
    unloading = asyncio.create_task(manager.unload())
    await eventually(lambda: manager.status().queue.waiting == 2, "the unload to queue")
    factory.generation_gate.set()
    assert await running == "Hello"
    assert await waiting == "Hello"
    assert (await unloading).state == "idle"


async def test_zero_max_waiting_refuses_any_wait(registry: ModelRegistry, factory: Factory) -> None:
    manager = make_manager(registry, factory, queue={"max_waiting": 0})
    await manager.load("alpha")
    running = await start_holding_generation(manager, factory)
    with pytest.raises(QueueFull):
        await generate(manager)
    factory.generation_gate.set()
    await running
    assert await generate(manager) == "Hello"  # a free slot needs no queue


async def test_waiters_get_the_slot_in_arrival_order(
    registry: ModelRegistry, factory: Factory
) -> None:
    manager = make_manager(registry, factory, queue={"max_waiting": 16})
    await manager.load("alpha")
    running = await start_holding_generation(manager, factory)
    order: list[int] = []

    async def waiter(number: int) -> None:
        async with manager.generation(REQUEST) as gen:
            order.append(number)
            async for _ in gen.events:
                pass

    waiters = []
    for number in range(8):
        waiters.append(asyncio.create_task(waiter(number)))
        await eventually(
            lambda n=number: manager.status().queue.waiting == n + 1, "the waiter to queue"
        )
    factory.generation_gate.set()
    await asyncio.gather(running, *waiters)
    assert order == list(range(8))


async def test_cancelled_waiter_leaves_the_queue(manager: ModelManager, factory: Factory) -> None:
    await manager.load("alpha")
    running = await start_holding_generation(manager, factory)
    waiter = asyncio.create_task(generate(manager))
    await eventually(lambda: manager.status().queue.waiting == 1, "one waiter")
    waiter.cancel()
    await eventually(lambda: manager.status().queue.waiting == 0, "the waiter to leave")
    factory.generation_gate.set()
    assert await running == "Hello"
    assert await generate(manager) == "Hello"


async def test_leaving_a_generation_early_counts_as_aborted(manager: ModelManager) -> None:
    await manager.load("alpha")
    async with manager.generation(REQUEST) as gen:
        async for _ in gen.events:
            break
    assert manager.status().counters["aborted"] == 1
    assert manager.state is State.READY


# --- worker death ---------------------------------------------------------------------


async def test_worker_exit_sets_failed_with_reason_and_next_load_works(
    manager: ModelManager, factory: Factory
) -> None:
    await manager.load("alpha")
    factory.workers[0].die("worker process killed by SIGSEGV")
    status = manager.status()
    assert status.state == "failed"
    assert status.model == "alpha"
    assert status.reason == "worker process killed by SIGSEGV"
    assert status.worker_pid is None
    assert not any(m.loaded for m in manager.list_models())

    again = await manager.load("alpha")
    assert again.state == "ready" and again.reason is None
    assert again.worker_pid == factory.workers[1].pid


async def test_worker_death_mid_generation_fails_the_request(
    manager: ModelManager, factory: Factory
) -> None:
    await manager.load("alpha")
    running = await start_holding_generation(manager, factory)
    factory.workers[0].die("worker process killed by SIGKILL")
    with pytest.raises(BackendCrashed, match="SIGKILL"):
        await running
    assert manager.status().state == "failed"
    assert manager.status().counters["failed"] == 1
    factory.generation_gate.set()
    assert await generate(manager, "alpha") == "Hello"  # loads again on request


# --- shutdown -------------------------------------------------------------------------


async def test_shutdown_drains_then_refuses_new_work(
    manager: ModelManager, factory: Factory
) -> None:
    await manager.load("alpha")
    running = await start_holding_generation(manager, factory)
    queued = asyncio.create_task(generate(manager))
    await eventually(lambda: manager.status().queue.waiting == 1, "one waiter")
    stopping = asyncio.create_task(manager.shutdown(drain_seconds=30))
    await eventually(lambda: not manager.accepting, "shutdown to begin")

    with pytest.raises(ShuttingDown):
        await manager.load("beta")
    with pytest.raises(ShuttingDown):
        await generate(manager)

    factory.generation_gate.set()
    assert await running == "Hello"  # the running generation was allowed to finish
    with pytest.raises(ShuttingDown):
        await queued  # a request still waiting is refused, not started
    await stopping
    assert factory.workers[0].stopped
    assert manager.status().state == "idle"
    assert len(factory.workers) == 1


async def test_shutdown_with_nothing_loaded(manager: ModelManager, factory: Factory) -> None:
    await manager.shutdown(drain_seconds=1)
    assert manager.state is State.IDLE
    with pytest.raises(ShuttingDown):
        await manager.unload()


# --- the model list -------------------------------------------------------------------


async def test_list_follows_the_registry_and_the_resident_model(
    manager: ModelManager, registry: ModelRegistry
) -> None:
    assert [m.entry.id for m in manager.list_models()] == ["alpha", "beta"]
    first = manager.list_models()
    first.clear()  # a caller's list is its own; the views in it are frozen
    assert [m.entry.id for m in manager.list_models()] == ["alpha", "beta"]

    put(registry.models_dir / "gamma.gguf")
    await registry.scan()
    assert [m.entry.id for m in manager.list_models()] == ["alpha", "beta", "gamma"]

    await manager.load("gamma")
    assert [m.entry.id for m in manager.list_models() if m.loaded] == ["gamma"]
    (registry.models_dir / "alpha.gguf").unlink()
    await registry.scan()
    assert [(m.entry.id, m.loaded) for m in manager.list_models()] == [
        ("beta", False),
        ("gamma", True),
    ]


# --- images --------------------------------------------------------------------------

PICTURE = ImageInput(b"\x89PNG-not-decoded-here", "image/png", 4, 4)
WITH_IMAGE = GenerateRequest(messages=(ChatMessage("user", "what is it?", images=(PICTURE,)),))


async def test_images_reach_only_a_model_that_can_see(
    manager: ModelManager, factory: Factory
) -> None:
    factory.seeing.add("beta.gguf")
    with pytest.raises(ModelHasNoVision) as refused:
        async with manager.generation(WITH_IMAGE, "alpha"):
            pytest.fail("a model without vision got an image")
    assert refused.value.details == {"model": "alpha", "images": 1}
    assert manager.status().model == "alpha"  # refused after the load, nothing generated
    async with manager.generation(WITH_IMAGE, "beta") as gen:
        assert [e async for e in gen.events if isinstance(e, TokenEvent)]
