"""The JSON shapes of the control protocol: the manager's typed views, rendered once.

docs/control-protocol.md documents these objects; rkllmctl reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from ..catalog.entries import ModelEntry
from ..catalog.metadata import ModelMeta
from ..views import LoadFailure, ModelView, Resident, Status


def load_failure(f: LoadFailure | None) -> dict[str, Any] | None:
    if f is None:
        return None
    return {
        "model": f.model,
        "code": f.code,
        "reason": f.reason,
        "at": f.at.isoformat(),
        "restored": f.restored,
    }


def status(st: Status) -> dict[str, Any]:
    r = st.resident
    return {
        "state": st.state.value,
        "model": st.model,
        "format": r.entry.format if r else None,
        "reason": st.reason,
        "queue": {"waiting": st.queue.waiting, "max": st.queue.max},
        "slots": slots(st),
        "worker_pid": r.worker_pid if r else None,
        "loaded_at": r.loaded_at.isoformat() if r else None,
        "options": r.options.to_dict() if r else {},
        "pinned": bool(r and r.pinned),
        "uptime_s": st.uptime_s,
        "counters": dict(st.counters),
        "version": st.version,
        # Native runtime facts of the resident model (RKLLM: library, version, driver).
        "runtime": r.props.runtime if r else None,
        # The last load that failed (kept until a load succeeds); ``restored`` names
        # the model that was loaded again so that it still serves.
        "load_failure": load_failure(st.load_failure),
        # The separate embedding model, when one is resident.
        "embedding": _embedding(st.embedding),
    }


def _embedding(r: Resident | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {
        "model": r.entry.id,
        "format": r.entry.format,
        "worker_pid": r.worker_pid,
        "loaded_at": r.loaded_at.isoformat(),
    }


def slots(st: Status) -> dict[str, int]:
    return {"total": st.slots.total, "busy": st.slots.busy, "free": st.slots.free}


def meta(m: ModelMeta) -> dict[str, Any]:
    return {
        "name": m.name,
        "description": m.description,
        "type": m.type,
        "context_length": m.context_length,
        "aliases": list(m.aliases),
        "sampling": dict(m.sampling),
        "source": asdict(m.source) if m.source else None,
        "architecture": m.architecture,
        "parameters": m.parameters,
        "quantization": m.quantization,
        "platform": m.platform,
    }


def entry(e: ModelEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "file": e.relpath,
        "format": e.format,
        "size_bytes": e.size_bytes,
        "modified": e.modified,
        **meta(e.meta),
    }


def model(view: ModelView) -> dict[str, Any]:
    return {**entry(view.entry), "loaded": view.loaded}


def shown(view: ModelView) -> dict[str, Any]:
    props = view.props.to_dict() if view.props else {}
    return {**model(view), "props": props}


class ModelRows:
    """``list``'s rows, rendered again only when the manager's views change (it hands
    out the same frozen views until the model set or the resident model changes)."""

    def __init__(self) -> None:
        self._views: tuple[ModelView, ...] = ()
        self._rows: list[dict[str, Any]] = []

    def rows(self, views: Sequence[ModelView]) -> list[dict[str, Any]]:
        same = len(views) == len(self._views) and all(
            a is b for a, b in zip(views, self._views, strict=True)
        )
        if not same:
            self._views, self._rows = tuple(views), [model(v) for v in views]
        return list(self._rows)
