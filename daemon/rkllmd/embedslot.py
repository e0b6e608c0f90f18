"""The optional second resident model: embeddings only, in a worker of its own.

It serves ``/v1/embeddings`` (and RPC ``embed``) for the model it holds while the
chat model stays resident and keeps generating: the two workers are separate
processes with separate queues. A GGUF model runs on llama.cpp on the CPU. An
``.rkllm`` model is refused (400 ``unsupported_model_format``): the NPU runtime is
not known to take a second model instance beside the chat model (a second process
would compete for the NPU's memory), so the NPU holds one model.

A crash of this worker drops the embedding model and nothing else; the daemon's
state (health, ``status.state``) is the chat model's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .catalog.entries import ModelEntry
from .config import LiveConfig
from .errors import NoModelLoaded, UnsupportedModelFormat
from .metrics import Metrics
from .props import ModelProps
from .requests import BackendDefaults, EmbedItem, LoadOptions
from .residency import ProgressCallback, SpawnWorker
from .slot import ModelSlot
from .views import Embeddings, Resident
from .worker.proxy import WorkerProcess

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Loaded:
    entry: ModelEntry
    options: LoadOptions
    props: ModelProps
    worker: WorkerProcess
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def view(self) -> Resident:
        return Resident(
            self.entry, self.options, self.props, self.worker.pid, self.loaded_at, pinned=False
        )


class EmbeddingSlot:
    def __init__(
        self,
        config: LiveConfig,
        spawn: SpawnWorker,
        defaults: Callable[[str], BackendDefaults],
        metrics: Metrics,
    ) -> None:
        self._live = config
        self._spawn = spawn
        self._defaults = defaults
        self._slot = ModelSlot(lambda: self._live.current.queue.max_waiting, metrics)
        self._loaded: _Loaded | None = None
        metrics.embedding_loaded.set_function(lambda: float(self._loaded is not None))

    @property
    def resident(self) -> Resident | None:
        loaded = self._loaded
        return loaded.view() if loaded is not None and loaded.worker.alive else None

    def holds(self, entry: ModelEntry) -> bool:
        loaded = self._loaded
        return loaded is not None and loaded.worker.alive and loaded.entry.path == entry.path

    async def load(self, entry: ModelEntry, progress: ProgressCallback) -> None:
        if entry.format != "gguf":
            raise UnsupportedModelFormat(
                "an embedding model beside the chat model must be a GGUF model (CPU): "
                "the NPU holds one model at a time",
                model=entry.id,
            )
        async with self._slot.hold(bounded=False):
            if self.holds(entry):
                await progress("ready", 1.0, f"{entry.id} is already the embedding model")
                return
            await self._stop(progress)
            await progress("starting", 0.1, "starting the embedding worker")
            started = time.monotonic()
            worker = await self._spawn(self._on_exit)
            await progress("loading", 0.2, f"loading {entry.id} for embeddings")
            options = LoadOptions()
            try:
                props = await worker.load(
                    entry.path,
                    entry.format,
                    options,
                    self._defaults(entry.format),
                    self._live.current.worker.load_timeout_seconds,
                    root=entry.root,
                )
            except BaseException:
                await worker.stop(self._live.current.worker.unload_grace_seconds)
                raise
            self._loaded = _Loaded(entry, options, props, worker)
            logger.info(
                "embedding model %s loaded in %.2f s (worker pid %d)",
                entry.id,
                time.monotonic() - started,
                worker.pid,
            )
            await progress("ready", 1.0, f"{entry.id} serves embeddings")

    async def unload(self) -> None:
        async with self._slot.hold(bounded=False):
            await self._stop(None)

    async def _stop(self, progress: ProgressCallback | None) -> None:
        loaded, self._loaded = self._loaded, None
        if loaded is None:
            return
        if progress is not None:
            await progress("unloading", 0.05, f"unloading the embedding model {loaded.entry.id}")
        await loaded.worker.stop(self._live.current.worker.unload_grace_seconds)
        logger.info("unloaded the embedding model %s", loaded.entry.id)

    async def embed(self, texts: Sequence[EmbedItem]) -> Embeddings:
        async with self._slot.hold(bounded=True):
            loaded = self._loaded
            if loaded is None or not loaded.worker.alive:
                raise NoModelLoaded("no embedding model is loaded")
            vectors, tokens = await loaded.worker.embed(texts)
        return Embeddings(loaded.entry.id, vectors, tokens)

    def _on_exit(self, worker: WorkerProcess, reason: str) -> None:
        loaded = self._loaded
        if loaded is not None and loaded.worker is worker:
            self._loaded = None
            logger.error("the embedding model %s is gone: %s", loaded.entry.id, reason)

    async def shutdown(self, drain_seconds: float) -> None:
        await self._slot.drain(drain_seconds)
        loaded, self._loaded = self._loaded, None
        if loaded is not None:
            await loaded.worker.stop(self._live.current.worker.unload_grace_seconds)
