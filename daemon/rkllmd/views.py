"""Typed values the manager hands to the transports; each transport renders them.

Nothing here is JSON: the RPC skin (``rpc/render.py``) and each HTTP dialect turn
these into their own wire shapes in one place.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from .catalog.entries import ModelEntry
from .props import ModelProps
from .requests import LoadOptions


class State(enum.StrEnum):
    IDLE = "idle"
    LOADING = "loading"
    READY = "ready"
    GENERATING = "generating"
    UNLOADING = "unloading"
    FAILED = "failed"


SERVING = (State.READY, State.GENERATING)


@dataclass(frozen=True, slots=True)
class QueueInfo:
    waiting: int
    max: int


@dataclass(frozen=True, slots=True)
class SlotInfo:
    """Generations the resident model runs at once, and how many run now."""

    total: int
    busy: int

    @property
    def free(self) -> int:
        return max(0, self.total - self.busy)


@dataclass(frozen=True, slots=True)
class Resident:
    """The resident model as the transports see it."""

    entry: ModelEntry
    options: LoadOptions
    props: ModelProps
    worker_pid: int
    loaded_at: datetime
    pinned: bool


@dataclass(frozen=True, slots=True)
class LoadFailure:
    """The last load that failed, and what the daemon did about it."""

    model: str
    code: str  # the error's stable code (load_failed, backend_unavailable, ...)
    reason: str
    at: datetime
    # The model that was resident before and was loaded again, when that worked.
    restored: str | None = None


@dataclass(frozen=True, slots=True)
class Status:
    state: State
    # The resident model's id, or the model a load is working on or failed on.
    model: str | None
    reason: str | None
    queue: QueueInfo
    slots: SlotInfo
    resident: Resident | None
    uptime_s: float
    counters: dict[str, int]
    version: str
    # Kept until a later load succeeds: a failed load may leave the previous model
    # serving (state ready), and this says which load failed and why.
    load_failure: LoadFailure | None = None
    # The optional second resident model that serves embeddings only.
    embedding: Resident | None = None

    @property
    def serving(self) -> bool:
        return self.state in SERVING

    @property
    def worker_pid(self) -> int | None:
        return self.resident.worker_pid if self.resident else None


@dataclass(frozen=True, slots=True)
class ModelView:
    """One model of the catalogue, and whether (and how) it is loaded."""

    entry: ModelEntry
    loaded: bool
    props: ModelProps | None = None  # the backend's report when loaded (``show``)


@dataclass(frozen=True, slots=True)
class Embeddings:
    model_id: str
    vectors: list[list[float]]  # one L2-normalised vector per input
    prompt_tokens: int
