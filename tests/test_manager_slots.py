"""ModelManager with a backend that runs several generations at once: slots shared
by generations (one per choice), loads and unloads alone, strict FIFO, the bounded
queue and worker death, per generation. Fake worker; no wall-clock assertions."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from rkllmd.catalog.registry import ModelRegistry
from rkllmd.errors import BackendCrashed, QueueFull
from rkllmd.manager import ModelManager, State
from rkllmd.requests import TokenEvent

from tests.test_manager import REQUEST, Factory, eventually, generate, make_manager
from tests.test_manager import registry as registry  # the fixture


@pytest.fixture
def factory() -> Factory:
    factory = Factory()
    factory.slots = 3
    factory.generation_gate.clear()  # generations hold their slots until released
    return factory


@pytest.fixture
async def manager(registry: ModelRegistry, factory: Factory) -> ModelManager:
    manager = make_manager(registry, factory, queue={"max_waiting": 2})
    await manager.load("alpha")
    return manager


def busy(manager: ModelManager) -> tuple[int, int, int]:
    status = manager.status()
    return status.slots.total, status.slots.busy, status.queue.waiting


async def choices(manager: ModelManager, n: int, log: list[str] | None = None) -> str:
    async with manager.generation(replace(REQUEST, n=n)) as gen:
        if log is not None:
            log.append(f"n={n}")
        return "".join([e.text async for e in gen.events if isinstance(e, TokenEvent)])


async def test_generations_share_the_slots_and_the_rest_wait(
    manager: ModelManager, factory: Factory
) -> None:
    running = [asyncio.create_task(generate(manager)) for _ in range(3)]
    await eventually(lambda: busy(manager) == (3, 3, 0), "three generations at once")
    assert manager.state is State.GENERATING
    queued = asyncio.create_task(generate(manager))
    await eventually(lambda: busy(manager) == (3, 3, 1), "the fourth to queue")
    factory.generation_gate.set()
    assert await asyncio.gather(*running, queued) == ["Hello"] * 4
    assert busy(manager) == (3, 0, 0)
    assert manager.state is State.READY
    assert manager.status().counters["completed"] == 4


async def test_the_queue_is_bounded_only_once_every_slot_is_busy(
    manager: ModelManager, factory: Factory
) -> None:
    running = [asyncio.create_task(generate(manager)) for _ in range(3)]
    await eventually(lambda: busy(manager)[1] == 3, "all slots busy")
    waiting = [asyncio.create_task(generate(manager)) for _ in range(2)]
    await eventually(lambda: busy(manager)[2] == 2, "two waiting")
    with pytest.raises(QueueFull) as err:
        await generate(manager)
    assert err.value.retry_after > 0
    factory.generation_gate.set()
    assert await asyncio.gather(*running, *waiting) == ["Hello"] * 5


async def test_a_request_for_n_choices_holds_n_slots_and_keeps_its_place(
    manager: ModelManager, factory: Factory
) -> None:
    order: list[str] = []
    first = asyncio.create_task(choices(manager, 2, order))
    await eventually(lambda: busy(manager)[1] == 2, "two slots for two choices")
    wide = asyncio.create_task(choices(manager, 3, order))
    await eventually(lambda: busy(manager)[2] == 1, "the 3-choice request to wait")
    # One slot is free, but the request behind the wide one does not overtake it.
    narrow = asyncio.create_task(choices(manager, 1, order))
    await eventually(lambda: busy(manager) == (3, 2, 2), "both to wait")
    factory.generation_gate.set()
    await asyncio.gather(first, wide, narrow)
    assert order == ["n=2", "n=3", "n=1"]


async def test_an_unload_waits_for_every_generation_and_holds_back_later_ones(
    manager: ModelManager, factory: Factory
) -> None:
    running = [asyncio.create_task(generate(manager)) for _ in range(2)]
    await eventually(lambda: busy(manager)[1] == 2, "two running")
    unloading = asyncio.create_task(manager.unload())
    await eventually(lambda: busy(manager)[2] == 1, "the unload to queue")
    later = asyncio.create_task(generate(manager))
    await eventually(lambda: busy(manager)[2] == 2, "a generation behind it")
    assert not factory.workers[0].stopped  # a free slot does not let the unload through
    factory.generation_gate.set()
    assert await asyncio.gather(*running) == ["Hello", "Hello"]
    assert (await unloading).state == "idle"
    with pytest.raises(Exception, match="no model is loaded"):
        await later


async def test_a_cold_model_loads_once_and_then_serves_the_requests_behind_in_parallel(
    registry: ModelRegistry, factory: Factory
) -> None:
    manager = make_manager(registry, factory, queue={"max_waiting": 8})
    factory.load_gate.clear()
    requests = [asyncio.create_task(generate(manager, "beta")) for _ in range(3)]
    await eventually(lambda: factory.loads == ["beta.gguf"], "the load to start")
    factory.load_gate.set()
    await eventually(lambda: busy(manager)[1] == 3, "all three generating on the new model")
    factory.generation_gate.set()
    assert await asyncio.gather(*requests) == ["Hello"] * 3
    assert factory.loads == ["beta.gguf"]


async def test_worker_death_fails_every_generation_in_flight_and_the_next_loads_again(
    manager: ModelManager, factory: Factory
) -> None:
    running = [asyncio.create_task(generate(manager)) for _ in range(3)]
    await eventually(lambda: busy(manager)[1] == 3, "three running")
    factory.workers[0].die("worker process killed by SIGSEGV")
    outcomes = await asyncio.gather(*running, return_exceptions=True)
    assert all(isinstance(o, BackendCrashed) for o in outcomes)
    assert manager.status().counters["failed"] == 3
    assert busy(manager)[1:] == (0, 0)
    factory.generation_gate.set()
    assert await generate(manager, "alpha") == "Hello"


async def test_slot_metrics_show_busy_and_free(manager: ModelManager, factory: Factory) -> None:
    running = asyncio.create_task(choices(manager, 2))
    await eventually(lambda: busy(manager)[1] == 2, "two busy")
    text = manager.metrics.render().decode()
    assert 'rkllmd_slots{state="busy"} 2.0' in text
    assert 'rkllmd_slots{state="free"} 1.0' in text
    factory.generation_gate.set()
    await running
