"""A failed load leaves the previous model serving (ModelManager with fake workers).

Two kinds of failure: parameters the catalogue already knows are wrong are refused
before anything is unloaded; a model that fails after the old one was unloaded
(corrupt file, missing runtime, crash) brings the old one back with its options.
The real-process versions of these (RPC, each HTTP dialect, load on request, the NPU
double) live with their transports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rkllmd.catalog.registry import ModelRegistry
from rkllmd.errors import DraftIncompatible, LoadFailed
from rkllmd.manager import ModelManager
from rkllmd.requests import LoadOptions

from tests.test_manager import Factory, generate, make_manager, put


@pytest.fixture
async def registry(tmp_path: Path) -> ModelRegistry:
    for name in ("alpha.gguf", "beta.gguf"):
        put(tmp_path / name)
    # The owner's sidecar says how much context beta has.
    (tmp_path / "beta.rkllmd.json").write_text(json.dumps({"context_length": 2048}))
    reg = ModelRegistry(tmp_path)
    await reg.scan()
    return reg


@pytest.fixture
def factory() -> Factory:
    return Factory()


@pytest.fixture
def manager(registry: ModelRegistry, factory: Factory) -> ModelManager:
    return make_manager(registry, factory)


async def test_too_much_context_is_refused_before_unloading(
    manager: ModelManager, factory: Factory
) -> None:
    await manager.load("alpha")
    with pytest.raises(LoadFailed) as err:
        await manager.load("beta", LoadOptions(ctx_size=4096))
    assert err.value.details == {"limit": 2048}
    assert "ctx_size 4096 exceeds the model's limit of 2048" in err.value.message
    status = manager.status()
    assert (status.state, status.model) == ("ready", "alpha")
    assert len(factory.workers) == 1 and not factory.workers[0].stopped  # never touched
    assert await generate(manager) == "Hello"
    # Within the limit it loads.
    assert (await manager.load("beta", LoadOptions(ctx_size=2048))).model == "beta"


async def test_a_model_that_fails_brings_the_previous_one_back_with_its_options(
    manager: ModelManager, factory: Factory
) -> None:
    await manager.load("alpha", LoadOptions(ctx_size=1024, threads=2), pin=True)
    factory.broken.add("beta.gguf")
    with pytest.raises(LoadFailed) as err:
        await manager.load("beta")
    assert err.value.details["restored"] == "alpha"
    assert factory.loads == ["alpha.gguf", "beta.gguf", "alpha.gguf"]
    status = manager.status()
    assert (status.state, status.model, status.reason) == ("ready", "alpha", None)
    assert status.resident is not None
    assert status.resident.options == LoadOptions(ctx_size=1024, threads=2)
    assert status.resident.pinned  # as it was
    failure = status.load_failure
    assert failure is not None
    assert (failure.model, failure.code, failure.restored) == ("beta", "load_failed", "alpha")
    assert "could not load" in failure.reason
    assert await generate(manager) == "Hello"
    # The next successful load forgets the failure.
    factory.broken.clear()
    assert (await manager.load("beta")).load_failure is None


async def test_when_the_previous_model_fails_too_the_state_says_both(
    manager: ModelManager, factory: Factory
) -> None:
    await manager.load("alpha")
    factory.broken.update({"alpha.gguf", "beta.gguf"})  # e.g. the runtime went away
    with pytest.raises(LoadFailed) as err:
        await manager.load("beta")
    assert "restored" not in err.value.details
    status = manager.status()
    assert (status.state, status.model) == ("failed", "beta")
    assert status.reason is not None and "loading alpha again failed as well" in status.reason
    assert status.load_failure is not None and status.load_failure.restored is None
    assert all(w.stopped for w in factory.workers)


async def test_load_on_request_failure_keeps_the_resident_model(
    manager: ModelManager, factory: Factory
) -> None:
    await manager.load("alpha")
    factory.broken.add("beta.gguf")
    with pytest.raises(LoadFailed):
        await generate(manager, "beta")
    assert manager.status().model == "alpha"
    assert await generate(manager) == "Hello"  # and it answers


async def test_a_first_load_that_fails_leaves_nothing_to_restore(
    manager: ModelManager, factory: Factory
) -> None:
    factory.broken.add("beta.gguf")
    with pytest.raises(LoadFailed):
        await manager.load("beta")
    status = manager.status()
    assert (status.state, status.model) == ("failed", "beta")
    assert status.load_failure is not None and status.load_failure.restored is None
    assert factory.loads == ["beta.gguf"]


async def test_speculation_that_cannot_work_is_refused_before_unloading(
    tmp_path: Path, factory: Factory
) -> None:
    """A draft (or prompt lookup) for a model on the NPU, or a draft that is not a GGUF:
    ``draft_incompatible`` before the resident model is touched."""
    for name in ("alpha.gguf", "npu.rkllm", "npu-draft.rkllm"):
        put(tmp_path / name)
    registry = ModelRegistry(tmp_path)
    await registry.scan()
    manager = make_manager(registry, factory)
    await manager.load("alpha")
    refused = [
        ("npu", LoadOptions(draft_model="alpha")),
        ("npu", LoadOptions(lookup_ngram=3)),
        ("alpha", LoadOptions(draft_model="npu-draft")),
    ]
    for model, options in refused:
        with pytest.raises(DraftIncompatible):
            await manager.load(model, options)
    status = manager.status()
    assert (status.state, status.model) == ("ready", "alpha")
    assert len(factory.workers) == 1 and not factory.workers[0].stopped
    # A GGUF drafting for a GGUF reaches the worker, as the draft's file.
    assert (await manager.load("alpha", LoadOptions(draft_model="alpha"))).model == "alpha"
