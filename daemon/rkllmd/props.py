"""What a backend reports about the model it loaded: typed where the daemon reads it.

The backend fills a ``ModelProps`` in the worker; it crosses the pipe as JSON. The
daemon reads the typed fields (context size, template, slots, reasoning) and shows
``details`` and ``runtime`` as they are: they are facts for people (``rkllmctl show``,
``doctor``), never interpreted.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

JsonValue = str | int | float | bool | None | list["JsonValue"] | dict[str, "JsonValue"]
Facts = dict[str, JsonValue]


@dataclass(frozen=True, slots=True)
class ModelProps:
    backend: str  # "llama.cpp", "rkllm", "fake"
    backend_version: str
    n_ctx: int
    n_ctx_train: int | None
    threads: int
    chat_template: str | None
    chat_template_source: str  # "model", "override", "fallback", a family name
    # Some templates (DeepSeek-R1 distills) open <think> in the prompt itself.
    reasoning_starts_open: bool = False
    slots: int = 1  # generations the backend runs at once
    logprobs: bool = False  # can report token log-probabilities
    # The backend constrains sampling with ``Sampling.grammar`` (llama.cpp); without
    # it, structured replies rest on the prompt instruction and checks with retries.
    grammar: bool = False
    # The model can see images (``ChatMessage.images``): llama.cpp with a multimodal
    # projector paired at load, RKLLM with a ``.rknn`` vision encoder. Requests with
    # images for a model without it are refused (model_has_no_vision).
    vision: bool = False
    notes: tuple[str, ...] = ()
    # Native runtime facts (RKLLM: library, version, driver, struct sizes).
    runtime: Facts | None = None
    # Everything else the backend knows (architecture, parameters, init log, ...).
    details: Facts = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """One flat object, as ``show`` and the worker pipe carry it."""
        flat: dict[str, Any] = dict(self.details)
        for f in fields(self):
            if f.name != "details":
                flat[f.name] = getattr(self, f.name)
        flat["notes"] = list(self.notes)
        return flat

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelProps:
        known = {f.name for f in fields(cls)} - {"details"}
        values = {k: v for k, v in data.items() if k in known}
        values["notes"] = tuple(values.get("notes") or ())
        details = {k: v for k, v in data.items() if k not in known}
        return cls(**values, details=details)
