"""ModelManager: the only owner of the resident model.

Everything that touches the model (load, unload, generate) goes through the FIFO
slots: the resident model runs as many generations at once as its backend
declares (the NPU one, llama.cpp its sequences), and a load or unload waits until
it holds the model alone. Generations wait in a bounded queue; loads and unloads
are administrative and always queue. Loads are single-flight: a second request
for the model being loaded joins the first (``residency.py`` does the loading and
keeps the state; this module decides who may load what and serves the requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from . import __version__
from .catalog.entries import ModelEntry
from .catalog.registry import ModelRegistry
from .closing import aclose_fully
from .config import LiveConfig
from .embedslot import EmbeddingSlot
from .errors import LoadFailed, LoadNotPermitted, ModelPinned, NoModelLoaded
from .idle import IdleTimer
from .loadplan import LoadPlanner, check_supported
from .metrics import Metrics
from .presets import SamplerPresets
from .props import ModelProps
from .requests import EmbedItem, GenerateRequest, GenerationEvent, LoadOptions
from .residency import ProgressCallback, Residency, ResidentModel, SpawnWorker, no_progress
from .slot import ModelSlot
from .stats import GenerationStats
from .views import Embeddings, ModelView, QueueInfo, SlotInfo, State, Status
from .worker.proxy import WorkerProcess

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Generation:
    """A running generation: which model serves it, and its event stream."""

    model_id: str
    events: AsyncIterator[GenerationEvent]
    load_seconds: float = 0.0  # spent loading the model for this request (0: it was resident)


class ModelManager:
    def __init__(
        self,
        config: LiveConfig,
        registry: ModelRegistry,
        spawn: SpawnWorker = WorkerProcess.spawn,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.metrics.bind_state(lambda: self._residency.state.value, lambda: self._slot.waiting)
        self.metrics.bind_slots(lambda: (self._slot.capacity, self._slot.in_use))
        self._live = config
        self._registry = registry
        self._slot = ModelSlot(lambda: self._live.current.queue.max_waiting, self.metrics)
        self._idle = IdleTimer()
        self._plan = LoadPlanner(config, registry)
        self._residency = Residency(config, self._slot, spawn, self._plan, self.metrics)
        self._residency.on_change = lambda: self.on_change()
        self._started = time.monotonic()
        self._generating = 0
        self._stats = GenerationStats(self.metrics)
        self.counters = self._stats.counters
        self.on_change: Callable[[], None] = lambda: None
        self._listing: tuple[tuple[Path | None, ...], list[ModelView]] | None = None
        registry.add_listener(self._forget_listing)
        self.embedding = EmbeddingSlot(config, spawn, self._plan.defaults, self.metrics)
        self.presets = SamplerPresets(config)

    # --- queries -------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._residency.state

    @property
    def accepting(self) -> bool:
        """False once shutdown began: new work is refused."""
        return not self._slot.closing

    def status(self) -> Status:
        resident = self._residency.model
        return Status(
            state=self._residency.state,
            model=resident.entry.id if resident else self._residency.subject,
            reason=self._residency.reason,
            queue=QueueInfo(self._slot.waiting, self._live.current.queue.max_waiting),
            slots=SlotInfo(self._slot.capacity, self._slot.in_use),
            resident=resident.view() if resident else None,
            uptime_s=round(time.monotonic() - self._started, 3),
            counters=dict(self.counters),
            version=__version__,
            load_failure=self._residency.load_failure,
            embedding=self.embedding.resident,
        )

    def resident_props(self) -> ModelProps | None:
        """What the backend reported about the resident model (None when none is)."""
        model = self._residency.model
        return model.props if model else None

    def list_models(self) -> list[ModelView]:
        # Built once per (published model set, resident model): with 1,000 models the
        # listing is asked for far more often than either changes. Views are frozen.
        model, embedding = self._residency.model, self.embedding.resident
        loaded = (model.entry.path if model else None, embedding.entry.path if embedding else None)
        if self._listing is None or self._listing[0] != loaded:
            views = [ModelView(e, e.path in loaded) for e in self._registry.entries()]
            self._listing = (loaded, views)
        return list(self._listing[1])

    def _forget_listing(self) -> None:
        self._listing = None

    def show(self, name: str) -> ModelView:
        entry = self._registry.resolve(name)
        resident = self._residency.model
        if resident is not None and resident.entry.path == entry.path:
            return ModelView(entry, True, resident.props)
        return ModelView(entry, False)

    # --- load / unload -------------------------------------------------------------

    async def load(
        self,
        name: str,
        options: LoadOptions | None = None,
        progress: ProgressCallback | None = None,
        *,
        pin: bool | None = None,
    ) -> Status:
        entry = self._registry.resolve(name)
        task = self._residency.join_or_start_load(
            entry, options or LoadOptions(), progress or no_progress
        )
        # The load outlives an impatient caller: others may be waiting on it.
        await asyncio.shield(task)
        if pin is not None and self._residency.model is not None:
            self._residency.model.pinned = pin
        self._arm_idle_timer()
        return self.status()

    async def unload(self) -> Status:
        async with self._slot.hold(bounded=False, exclusive=True):
            await self._residency.unload_locked()
        return self.status()

    # --- generation ----------------------------------------------------------------

    @asynccontextmanager
    async def generation(
        self,
        request: GenerateRequest,
        model: str | None = None,
        *,
        may_load: bool = True,
        keep_alive: float | None = None,
    ) -> AsyncIterator[Generation]:
        """Hold slots for one generation (one per choice); leaving the block early
        aborts it.

        ``may_load`` False: refuse (LoadNotPermitted) rather than load or replace a
        model for this request; what is resident serves it as usual. ``keep_alive``
        replaces the configured idle time for the model from now on."""
        entry = self._registry.resolve(model) if model else None
        request = await self._with_presets(request)
        started = time.monotonic()
        async with self._serving(entry, max(1, request.n), may_load) as resident:
            loaded = time.monotonic() - started if resident.loaded_at_mono >= started else 0.0
            check_supported(request, resident.entry.id, resident.props)
            self._generating += 1
            self._residency.set_state(State.GENERATING)
            events = self._stats.track(
                resident.worker.generate(request, self._live.current.worker.abort_grace_seconds)
            )
            try:
                yield Generation(resident.entry.id, events, loaded)
            finally:
                try:
                    await aclose_fully(events)  # the worker has stopped when this returns
                finally:  # and a cancel it raises again must not skip the count
                    self._generating -= 1
                    if self._generating == 0 and self._residency.state is State.GENERATING:
                        self._residency.set_state(State.READY)
        self._keep_alive(resident, keep_alive)

    async def _with_presets(self, request: GenerateRequest) -> GenerateRequest:
        """The sampler override preset in force, applied (see presets.py)."""
        if self.presets.config_changed():
            await asyncio.to_thread(self.presets.follow_config)
        return dataclasses.replace(request, sampling=self.presets.apply(request.sampling))

    async def embed(
        self,
        texts: Sequence[EmbedItem],
        model: str | None = None,
        *,
        may_load: bool = True,
        keep_alive: float | None = None,
    ) -> Embeddings:
        """Embeddings from the embedding model when it is the one asked for (or none is
        named), from a model whose metadata says ``embedding`` (loaded into the
        embedding slot), else from the resident (or requested) chat model
        (``may_load`` as above)."""
        entry = self._registry.resolve(model) if model else None
        if await self._embedding_slot_serves(entry, may_load):
            return await self.embedding.embed(texts)
        async with self._serving(entry, 1, may_load) as resident:
            vectors, tokens = await resident.worker.embed(texts)
        self._keep_alive(resident, keep_alive)
        return Embeddings(resident.entry.id, vectors, tokens)

    async def _embedding_slot_serves(self, entry: ModelEntry | None, may_load: bool) -> bool:
        if entry is None:
            return self.embedding.resident is not None
        if self.embedding.holds(entry):
            return True
        main = self._residency.model
        if entry.meta.type != "embedding" or (main is not None and main.entry.path == entry.path):
            return False
        if not self._live.current.generation.load_on_request:
            raise NoModelLoaded(f"{entry.id} is not loaded and loading on request is disabled")
        if not may_load:
            raise LoadNotPermitted(
                f"{entry.id} is not loaded; loading it for a request needs the admin key",
                model=entry.id,
            )
        await self.embedding.load(entry, no_progress)
        return True

    async def tokenize(
        self, text: str | None, request: GenerateRequest | None, *, add_bos: bool, special: bool
    ) -> list[int]:
        """Token ids from the resident model's tokenizer: of ``text``, or of the prompt
        a chat ``request`` renders to. Never loads a model, never waits for the slot."""
        return await self._tokenizer_worker().tokenize(text, request, add_bos, special)

    async def detokenize(self, tokens: list[int], *, special: bool) -> str:
        return await self._tokenizer_worker().detokenize(tokens, special)

    def _tokenizer_worker(self) -> WorkerProcess:
        resident = self._residency.model
        if resident is None or not resident.worker.alive:
            raise NoModelLoaded("no model is loaded; its tokenizer is what encodes")
        return resident.worker

    async def load_embedding(self, name: str, progress: ProgressCallback | None = None) -> Status:
        """Make ``name`` the embedding model (beside the chat model)."""
        await self.embedding.load(self._registry.resolve(name), progress or no_progress)
        return self.status()

    async def unload_embedding(self) -> Status:
        await self.embedding.unload()
        return self.status()

    @asynccontextmanager
    async def _serving(
        self, entry: ModelEntry | None, weight: int, may_load: bool
    ) -> AsyncIterator[ResidentModel]:
        """Slots on a resident model that serves ``entry`` (the resident one if None).

        When it is not resident, the request waits to hold the model alone, loads
        it, and then shares it with the requests queued behind. A request that
        waited for slots while another request replaced the model queues again.
        """
        alone = lambda: not self._residency.serves(entry)  # noqa: E731 - asked when granted
        while True:
            self._refuse_at_once(entry, may_load)
            async with self._slot.hold(bounded=True, weight=weight, exclusive=alone) as hold:
                if hold.exclusive:
                    resident = await self._ensure_resident(entry, may_load)
                    self._slot.share(hold)
                elif self._residency.serves(entry):
                    assert self._residency.model is not None
                    resident = self._residency.model
                else:
                    continue  # the worker died since the grant: queue again to load
                yield resident
                return

    def _keep_alive(self, resident: ResidentModel, keep_alive: float | None) -> None:
        if keep_alive is not None and self._residency.model is resident:
            resident.keep_alive = keep_alive
        self._arm_idle_timer()

    def expires_at(self) -> datetime | None:
        """When the resident model will be unloaded for idleness (None: not planned)."""
        return self._idle.deadline

    def _refuse_at_once(self, entry: ModelEntry | None, may_load: bool) -> None:
        """Raise what a request for ``entry`` gets when it cannot be served, not even
        by loading it; checked before waiting, and again once the model is held."""
        if self._residency.serves(entry):
            return
        resident = self._residency.model
        if entry is None:
            if self._residency.pending is not None:
                return  # it may serve once the load in progress is done
            raise NoModelLoaded("no model is loaded; load one first or name a model in the request")
        if not self._live.current.generation.load_on_request:
            raise NoModelLoaded(f"{entry.id} is not loaded and loading on request is disabled")
        if resident is not None and resident.pinned and resident.worker.alive:
            raise ModelPinned(
                f"{resident.entry.id} is pinned; only an explicit load can replace it",
                pinned=resident.entry.id,
            )
        if not may_load:
            raise LoadNotPermitted(
                f"{entry.id} is not loaded; loading it for a request needs the admin key",
                model=entry.id,
            )

    async def _ensure_resident(self, entry: ModelEntry | None, may_load: bool) -> ResidentModel:
        self._refuse_at_once(entry, may_load)
        if not self._residency.serves(entry):
            if entry is None:  # a load it waited for failed
                raise NoModelLoaded("no model is loaded; load one first or name a model")
            await self._load_even_if_cancelled(entry)
        assert self._residency.model is not None
        return self._residency.model

    async def _load_even_if_cancelled(self, entry: ModelEntry) -> None:
        # We hold the model: a cancelled caller must not release it mid-load.
        task = asyncio.create_task(self._residency.load_locked(entry, LoadOptions(), no_progress))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await task
            raise

    # --- idle unload ---------------------------------------------------------------

    def _arm_idle_timer(self) -> None:
        """(Re)start the keep-alive countdown after the model was last used."""
        self._idle.cancel()
        resident = self._residency.model
        if resident is None or resident.pinned:
            return
        keep_alive = resident.keep_alive
        if keep_alive is None:  # the configured time, where 0 means "keep it"
            keep_alive = self._live.current.generation.keep_alive_seconds or math.inf
        self._idle.arm(keep_alive, lambda: self._on_idle(resident, keep_alive))

    def _on_idle(self, resident: ResidentModel, keep_alive: float) -> None:
        if self._residency.model is resident and not self._slot.busy() and not self._slot.closing:
            logger.info("unloading %s after %.0f s idle", resident.entry.id, keep_alive)
            task = asyncio.create_task(self._unload_if_still_idle(resident))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _unload_if_still_idle(self, resident: ResidentModel) -> None:
        async with self._slot.hold(bounded=False, exclusive=True):
            if self._residency.model is resident:
                await self._residency.unload_locked()

    # --- health and shutdown -------------------------------------------------------

    def check_stuck(self) -> None:
        """Kill a worker that has produced nothing for too long while generating."""
        resident = self._residency.model
        if resident is None or self._residency.state is not State.GENERATING:
            return
        silent = time.monotonic() - resident.worker.last_activity
        if silent > self._live.current.worker.stuck_seconds:
            logger.error("worker silent for %.0f s during a generation; killing it", silent)
            resident.worker.kill(f"the worker stopped responding for {silent:.0f} s")

    async def shutdown(self, drain_seconds: float) -> None:
        """Refuse new work, let the running generations finish, then free the model."""
        self._idle.cancel()
        if not await self._slot.drain(drain_seconds):
            logger.warning("generations still running after %.1f s; stopping them", drain_seconds)
        resident, self._residency.model = self._residency.model, None
        if resident is not None:
            await resident.worker.stop(self._live.current.worker.unload_grace_seconds)
        await self.embedding.shutdown(0)
        if self._residency.pending is not None:
            with contextlib.suppress(BaseException):
                await self._residency.pending[2]
        self._residency.set_state(State.IDLE)


__all__ = ["Generation", "LoadFailed", "ModelManager", "State"]
