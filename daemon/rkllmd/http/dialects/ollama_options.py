"""How Ollama's request fields map onto rkllmd's: options, keep_alive, format, think,
num_ctx, the load-only requests, and the timings of the last object."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol

from aiohttp import web
from pydantic import Field, StrictBool

from ... import errors as e
from ... import structured
from ...images import decode_grouped
from ...requests import ImageInput, LoadOptions
from ...wire import NUMBER, SamplingFields, StopField, to_sampling
from ..schemas import Body
from ..services import Services
from ..streaming import Run
from .ollama_models import Name, resolve_name

UNLIMITED = 1_048_576  # num_predict -1/-2: up to the context (the backend stops there)
_DURATION = re.compile(r"(-?\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class Options(Body):
    """The Modelfile parameters rkllmd maps; Ollama's others are accepted and ignored."""

    num_ctx: Annotated[int, Field(ge=1, le=1_048_576), NUMBER] | None = None
    num_predict: Annotated[int, Field(ge=-2, le=1_048_576), NUMBER] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0), NUMBER] | None = None
    top_k: Annotated[int, Field(ge=0, le=1000), NUMBER] | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0), NUMBER] | None = None
    min_p: Annotated[float, Field(ge=0.0, le=1.0), NUMBER] | None = None
    repeat_penalty: Annotated[float, Field(gt=0.0, le=10.0), NUMBER] | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0), NUMBER] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0), NUMBER] | None = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**64 - 1), NUMBER] | None = None
    stop: StopField = None

    def sampling_fields(self) -> SamplingFields:
        return SamplingFields.model_validate(self.model_dump(exclude={"num_ctx", "num_predict"}))

    def max_tokens(self) -> int | None:
        if self.num_predict is None or self.num_predict == 0:
            return None
        return UNLIMITED if self.num_predict < 0 else self.num_predict


KeepAlive = Annotated[float, NUMBER] | Annotated[str, Field(max_length=64)] | None
Format = Literal["json", ""] | dict[str, Any] | None
Think = StrictBool | Literal["low", "medium", "high", "max"] | None


class Generation(Body):
    model: Name
    format: Format = None
    options: Options | None = None
    stream: StrictBool | None = None
    keep_alive: KeepAlive = None
    think: Think = None


class Named(Protocol):
    """A request body naming a model, with Ollama's options."""

    @property
    def model(self) -> str: ...
    @property
    def options(self) -> Options | None: ...


# --- mapping -----------------------------------------------------------------------


def keep_alive_seconds(value: float | str | None, may_load: bool = True) -> float | None:
    """Ollama's keep_alive (seconds, or a Go duration such as "5m", "1h30m", "-1")
    as the manager's: seconds, 0 to unload at once, math.inf to keep. Keeping or
    unloading a model is management: from a key that may not load models it is
    ignored (the configured keep-alive applies), never refused (clients send it
    with every request)."""
    if value is None or not may_load:
        if isinstance(value, str) and not may_load:
            _duration(value)  # still a well-formed duration, or 400
        return None
    return _duration(value) if isinstance(value, str) else _seconds(float(value))


def _seconds(seconds: float) -> float:
    return float("inf") if seconds < 0 else seconds


def _duration(value: str) -> float:
    text = value.strip()
    try:
        return _seconds(float(text))
    except ValueError:
        parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise e.InvalidParams(f"keep_alive {value!r} is not a duration", param="keep_alive")
    return _seconds(sum(float(n) * _UNITS[u] for n, u in parts))


def reply_format(value: Format) -> structured.JsonReply | None:
    if value in (None, ""):
        return None
    if value == "json":
        return structured.JsonReply()
    return structured.json_schema_reply(value, "format")


def thinking(value: Think) -> bool | None:
    return None if value is None else value is not False


def sampling_of(body: Generation, default_max: int) -> Any:
    options = body.options or Options()
    return to_sampling(options.sampling_fields(), options.max_tokens(), default_max)


def ollama_images(svc: Services, groups: Sequence[Sequence[str]]) -> list[tuple[ImageInput, ...]]:
    """Each message's ``images`` (base64), decoded and bounded together."""
    limits = svc.config.current.vision
    return decode_grouped([[(i, None) for i in group] for group in groups], limits)


async def prepare(svc: Services, body: Named, may_load: bool) -> str:
    """The model's id; with ``num_ctx``, the model loaded with that context (a load:
    refused with ``load_not_permitted`` for a key that may not load models)."""
    entry = resolve_name(svc.registry, body.model)
    options = body.options
    if options is None or options.num_ctx is None:
        return entry.id
    status = svc.manager.status()
    resident = status.resident
    limit = entry.meta.context_length
    if resident is not None and resident.entry.path == entry.path:
        limit = resident.props.n_ctx_train or limit
        if resident.props.n_ctx == min(options.num_ctx, limit or options.num_ctx):
            return entry.id
    if not svc.config.current.generation.load_on_request:
        raise e.NoModelLoaded(f"{entry.id} would need a reload and loading on request is off")
    if not may_load:
        raise e.LoadNotPermitted(
            f"num_ctx would reload {entry.id}, and this key may not load models", model=entry.id
        )
    await svc.manager.load(
        entry.id, LoadOptions(ctx_size=min(options.num_ctx, limit or options.num_ctx))
    )
    return entry.id


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def timings(run: Run, started: float) -> dict[str, Any]:
    """Ollama's final statistics, in nanoseconds, as the daemon measured them."""
    ended = time.monotonic()
    first = run.first_event_at or ended
    usage = run.done.usage
    return {
        "total_duration": ns(ended - started),
        "load_duration": ns(run.load_seconds),
        "prompt_eval_count": usage.prompt_tokens,
        "prompt_eval_duration": ns(first - started - run.load_seconds),
        "eval_count": usage.completion_tokens,
        "eval_duration": ns(ended - first),
    }


def ns(seconds: float) -> int:
    return max(int(seconds * 1e9), 0)


# --- load-only requests ------------------------------------------------------------


async def load_only(
    svc: Services, model: str, keep_alive: float | None, may_load: bool, key: str, value: Any
) -> web.Response:
    """An empty chat or prompt: load the model, or unload it when keep_alive is 0
    (management: refused for a key that may not load models)."""
    status = svc.manager.status()
    resident = status.resident is not None and status.resident.entry.id == model
    if not may_load and not (resident and keep_alive != 0):
        raise e.LoadNotPermitted(f"this key may not load or unload {model}", model=model)
    if keep_alive == 0:
        if resident:
            await svc.manager.unload()
        reason = "unload"
    else:
        await svc.manager.load(model)
        reason = "load"
    return web.json_response(
        {"model": model, "created_at": now(), key: value, "done": True, "done_reason": reason}
    )
