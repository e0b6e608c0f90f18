"""Which model is resident, and how it gets there: load, unload, restore, worker exit.

The manager's state machine (IDLE, LOADING, READY, GENERATING, UNLOADING, FAILED)
lives here with the resident model. Loads hold the model alone (an exclusive slot
hold) and are single-flight: a second request for the model being loaded, with the
same options, joins the first. A load that fails after the previous model was
unloaded loads that one again, so a bad file never leaves the board without a model.
The manager decides who may load what; this module only does it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from .catalog.entries import ModelEntry
from .config import LiveConfig
from .errors import RkllmdError
from .loadplan import LoadPlanner, check_options, load_failure
from .metrics import Metrics
from .props import ModelProps
from .requests import LoadOptions
from .slot import ModelSlot
from .views import LoadFailure, Resident, State
from .worker.proxy import WorkerProcess

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[str, float | None, str], Awaitable[None]]
SpawnWorker = Callable[[Callable[[WorkerProcess, str], None]], Awaitable[WorkerProcess]]


async def no_progress(stage: str, fraction: float | None, message: str) -> None:
    return None


@dataclass(slots=True)
class ResidentModel:
    entry: ModelEntry
    options: LoadOptions
    props: ModelProps
    worker: WorkerProcess
    pinned: bool = False
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    loaded_at_mono: float = field(default_factory=time.monotonic)
    # A request's keep-alive (Ollama's keep_alive) for this model, replacing the
    # configured one: seconds idle before unloading, 0 at once, math.inf never.
    keep_alive: float | None = None

    def view(self) -> Resident:
        return Resident(
            self.entry, self.options, self.props, self.worker.pid, self.loaded_at, self.pinned
        )


class Residency:
    """The resident model and the state; every change goes through ``set_state``."""

    def __init__(
        self,
        config: LiveConfig,
        slot: ModelSlot,
        spawn: SpawnWorker,
        plan: LoadPlanner,
        metrics: Metrics,
    ) -> None:
        self._live = config
        self._slot = slot
        self._spawn = spawn
        self._plan = plan
        self._metrics = metrics
        self.state = State.IDLE
        self.subject: str | None = None  # model being loaded / failed
        self.reason: str | None = None
        self.model: ResidentModel | None = None
        self.load_failure: LoadFailure | None = None
        self.pending: tuple[ModelEntry, LoadOptions, asyncio.Task[None]] | None = None
        self.on_change: Callable[[], None] = lambda: None

    def set_state(
        self, state: State, *, subject: str | None = None, reason: str | None = None
    ) -> None:
        self.state, self.subject, self.reason = state, subject, reason
        self.on_change()

    def serves(self, entry: ModelEntry | None) -> bool:
        """A live resident model that is ``entry`` (any, when None)."""
        model = self.model
        return (
            model is not None
            and model.worker.alive
            and (entry is None or entry.path == model.entry.path)
        )

    # --- loading -------------------------------------------------------------------

    def join_or_start_load(
        self, entry: ModelEntry, options: LoadOptions, progress: ProgressCallback
    ) -> asyncio.Task[None]:
        pending = self.pending
        if pending and pending[0].path == entry.path and pending[1] == options:
            return pending[2]
        task = asyncio.create_task(self._queued_load(entry, options, progress))
        self.pending = (entry, options, task)
        task.add_done_callback(lambda t: self._forget_load(t))
        return task

    def _forget_load(self, task: asyncio.Task[None]) -> None:
        if self.pending and self.pending[2] is task:
            self.pending = None
        if not task.cancelled():
            task.exception()  # retrieved here so an unobserved failure is not logged twice

    async def _queued_load(
        self, entry: ModelEntry, options: LoadOptions, progress: ProgressCallback
    ) -> None:
        async with self._slot.hold(bounded=False, exclusive=True):
            await self.load_locked(entry, options, progress)

    def _is_resident(self, entry: ModelEntry, options: LoadOptions) -> bool:
        r = self.model
        if r is None or r.entry.path != entry.path or not r.worker.alive:
            return False
        # Other options (a template, a context) reload; the same ones are a no-op.
        return options == r.options

    async def load_locked(
        self, entry: ModelEntry, options: LoadOptions, progress: ProgressCallback
    ) -> None:
        """Load ``entry`` while holding the model alone; on failure, restore the previous."""
        if self._is_resident(entry, options):
            await progress("ready", 1.0, f"{entry.id} is already loaded")
            return
        check_options(entry, options)  # refused here, the resident model still serves
        self._plan.draft_path(options.draft_model)  # so is a draft model that is not one
        previous = self.model
        if previous is not None:
            await progress("unloading", 0.05, f"unloading {previous.entry.id}")
            await self.unload_locked()
        try:
            await self._start(entry, options, progress, pinned=self._plan.pinned_by_config(entry))
        except Exception as exc:
            failure = load_failure(entry, exc)
            if previous is not None:
                failure = await self._restore(previous, failure, progress)
            self.load_failure = failure
            if isinstance(exc, RkllmdError) and failure.restored:
                exc.details["restored"] = failure.restored
            raise
        self.load_failure = None

    async def _start(
        self, entry: ModelEntry, options: LoadOptions, progress: ProgressCallback, *, pinned: bool
    ) -> None:
        """Spawn a worker and load ``entry`` into it; on failure the state says why."""
        self.set_state(State.LOADING, subject=entry.id)
        await progress("starting", 0.1, "starting the worker process")
        started = time.monotonic()
        worker = await self._spawn(self.on_worker_exit)
        await progress("loading", 0.2, f"loading {entry.id}")
        try:
            props = await worker.load(
                entry.path,
                entry.format,
                replace(options, draft_model=self._plan.draft_path(options.draft_model)),
                self._plan.defaults(entry.format),
                self._live.current.worker.load_timeout_seconds,
                root=entry.root,
            )
        except BaseException as exc:
            await worker.stop(self._live.current.worker.unload_grace_seconds)
            reason = exc.message if isinstance(exc, RkllmdError) else "the load was interrupted"
            self.set_state(State.FAILED, subject=entry.id, reason=reason)
            raise
        self.model = ResidentModel(entry, options, props, worker, pinned=pinned)
        self._slot.set_capacity(props.slots)
        self.set_state(State.READY)
        self._metrics.load_seconds.observe(time.monotonic() - started)
        logger.info(
            "loaded %s in %.2f s (worker pid %d)", entry.id, time.monotonic() - started, worker.pid
        )
        await progress("ready", 1.0, f"{entry.id} is ready")

    async def _restore(
        self, previous: ResidentModel, failure: LoadFailure, progress: ProgressCallback
    ) -> LoadFailure:
        """A load failed after the previous model was unloaded: bring that one back."""
        old = previous.entry
        logger.warning(
            "loading %s failed (%s); loading %s again", failure.model, failure.reason, old.id
        )
        await progress("restoring", None, f"{failure.model} failed to load; loading {old.id} again")
        try:
            await self._start(old, previous.options, progress, pinned=previous.pinned)
        except Exception as exc:
            logger.error("could not load %s again: %s", old.id, exc)
            reason = f"{failure.reason}; loading {old.id} again failed as well"
            self.set_state(State.FAILED, subject=failure.model, reason=reason)
            return failure
        return replace(failure, restored=old.id)

    # --- unloading -----------------------------------------------------------------

    async def unload_locked(self) -> None:
        model, self.model = self.model, None
        if model is None:
            if self.state is State.FAILED:
                self.set_state(State.IDLE)  # unloading clears a failure
            return
        self.set_state(State.UNLOADING, subject=model.entry.id)
        await model.worker.stop(self._live.current.worker.unload_grace_seconds)
        self.set_state(State.IDLE)
        logger.info("unloaded %s", model.entry.id)

    def on_worker_exit(self, worker: WorkerProcess, reason: str) -> None:
        model = self.model
        if model is not None and model.worker is worker:
            self.model = None
            self.set_state(State.FAILED, subject=model.entry.id, reason=reason)
