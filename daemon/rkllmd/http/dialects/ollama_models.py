"""Ollama's model routes: /api/version, /api/tags, /api/show, /api/ps, /api/pull,
/api/delete; and how Ollama's ``name:tag`` names find our models.

Names: every model is listed as ``<id>:latest``. ``<id>``, ``<id>:latest`` and any
name the registry resolves (prefix, alias) work; another tag picks, among the models
the name starts, the one whose file name holds the tag (``smollm2:q4_1``).
``hf.co/{owner}/{repo}[:{quant}]`` names a model pulled from that Hub repository (the
quantisation, when given, is matched in the file name); ``/api/pull`` takes the same
form. Errors are Ollama's ``{"error": "..."}`` with the usual status codes.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from aiohttp import web
from pydantic import ConfigDict, Field, StrictBool

from ... import __version__
from ... import errors as e
from ...catalog.entries import ModelEntry
from ...catalog.registry import ModelRegistry
from ...props import ModelProps
from ...store import PullRequest
from ...store.job import TERMINAL
from ..edge import read_body
from ..routing import Route
from ..schemas import Body, ModelName
from ..services import services
from ..sse import EventStream
from ..streaming import streamed

# The Ollama API level these routes follow (tools, think, structured format).
OLLAMA_VERSION = "0.9.0"
HUB_PREFIXES = ("hf.co/", "huggingface.co/")
_QUANT = re.compile(r"(?i)^(?:i?q\d\w*|f16|f32|bf16|w\d+a\d+\w*)$")
_TAG_TEXT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
NEVER = "9999-12-31T23:59:59Z"

Name = ModelName
HUB_NAME_PATTERN = (
    r"^(?:hf\.co|huggingface\.co)/[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
    r"/[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?(?::[A-Za-z0-9_.-]{1,64})?$"
)


class ModelRequest(Body):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "anyOf": [
                {"required": ["model"], "properties": {"model": {"type": "string"}}},
                {"required": ["name"], "properties": {"name": {"type": "string"}}},
            ]
        },
    )

    model: Name | None = None
    name: Name | None = None  # the older spelling, still sent by some clients

    def target(self) -> str:
        value = self.model or self.name
        if not value:
            raise e.InvalidParams("model is required", param="model")
        return value


class ShowRequest(ModelRequest):
    verbose: StrictBool | None = None


HubName = Annotated[str, Field(max_length=255, json_schema_extra={"pattern": HUB_NAME_PATTERN})]


class PullBody(ModelRequest):
    model: HubName | None = None
    name: HubName | None = None
    insecure: StrictBool | None = None
    stream: StrictBool | None = None


# --- names -------------------------------------------------------------------------


def split_tag(name: str) -> tuple[str, str | None]:
    head, sep, tag = name.rpartition(":")
    if not sep or "/" in tag or not head:
        return name, None
    return head, tag


def resolve_name(registry: ModelRegistry, name: str) -> ModelEntry:
    """The model an Ollama name means (see the module doc)."""
    if name.lower().startswith(HUB_PREFIXES):
        return _from_hub_name(registry, name)
    base, tag = split_tag(name)
    if tag is None or tag == "latest":
        return registry.resolve(base)
    try:
        return registry.resolve(name)
    except e.ModelNotFound:
        pass
    folded, wanted = base.casefold(), tag.casefold()
    found = [
        entry
        for entry in registry.entries()
        if entry.id.casefold().startswith(folded) and wanted in _stem(entry).casefold()
    ]
    return _one(found, name)


def _from_hub_name(registry: ModelRegistry, name: str) -> ModelEntry:
    repo, quant = hub_reference(name)
    folded = repo.casefold()
    found = [
        entry
        for entry in registry.entries()
        if (entry.meta.source and entry.meta.source.repo.casefold() == folded)
        or entry.relpath.casefold().startswith(folded + "/")
    ]
    if quant:
        found = [entry for entry in found if quant.casefold() in _stem(entry).casefold()]
    return _one(found, name)


def _one(found: list[ModelEntry], name: str) -> ModelEntry:
    if len(found) == 1:
        return found[0]
    if not found:
        raise e.ModelNotFound(f"model {name!r} not found")
    ids = sorted(entry.id for entry in found)
    raise e.AmbiguousModel(f"{name!r} matches several models: {', '.join(ids)}", candidates=ids)


def hub_reference(name: str) -> tuple[str, str | None]:
    """``hf.co/{owner}/{repo}[:{quant}]`` as (``owner/repo``, quant or None)."""
    rest = name.split("/", 1)[1] if "/" in name else ""
    repo, quant = split_tag(rest)
    if repo.count("/") != 1:
        raise e.InvalidParams(
            f"{name!r} is not hf.co/{{owner}}/{{repo}}[:{{quant}}]", param="model"
        )
    if quant == "latest":
        quant = None
    if quant is not None and not _TAG_TEXT.match(quant):
        raise e.InvalidParams(f"{quant!r} is not a quantisation tag", param="model")
    return repo, quant


def _stem(entry: ModelEntry) -> str:
    return entry.relpath.rsplit("/", 1)[-1].rsplit(".", 1)[0]


# --- model descriptions -------------------------------------------------------------


def ollama_name(entry: ModelEntry) -> str:
    return f"{entry.id}:latest"


def digest(entry: ModelEntry) -> str:
    """Identifies this version of the file (path, size, mtime): not a hash of its bytes."""
    key = f"{entry.relpath}\0{entry.size_bytes}\0{entry.mtime}".encode()
    return hashlib.sha256(key).hexdigest()


def quantisation(entry: ModelEntry) -> str:
    parts = re.split(r"[.-]", _stem(entry))
    return next((p for p in reversed(parts) if _QUANT.match(p)), "")


def details(entry: ModelEntry, props: ModelProps | None) -> dict[str, Any]:
    facts = props.details if props else {}
    family = facts.get("architecture")
    params = facts.get("n_params")
    return {
        "parent_model": "",
        "format": entry.format,
        "family": family if isinstance(family, str) else "",
        "families": [family] if isinstance(family, str) else None,
        "parameter_size": _size(params) if isinstance(params, int) else "",
        "quantization_level": quantisation(entry),
    }


def _size(params: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if params >= scale:
            return f"{params / scale:.1f}{unit}".replace(".0", "")
    return str(params)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _modified(entry: ModelEntry) -> str:
    return _iso(datetime.fromtimestamp(entry.mtime, UTC))


def _capabilities(entry: ModelEntry) -> list[str]:
    if entry.meta.type == "embedding":
        return ["embedding"]
    return ["completion", "tools", "insert"] if entry.format == "gguf" else ["completion", "tools"]


# --- routes --------------------------------------------------------------------------


async def version(request: web.Request) -> web.Response:
    return web.json_response({"version": OLLAMA_VERSION, "rkllmd": __version__})


async def tags(request: web.Request) -> web.Response:
    manager = services(request).manager
    resident = manager.resident_props()
    models = [
        {
            "name": ollama_name(view.entry),
            "model": ollama_name(view.entry),
            "modified_at": _modified(view.entry),
            "size": view.entry.size_bytes,
            "digest": digest(view.entry),
            "details": details(view.entry, resident if view.loaded else None),
        }
        for view in manager.list_models()
    ]
    return web.json_response({"models": models})


async def show(request: web.Request) -> web.Response:
    svc = services(request)
    body = await read_body(request, ShowRequest, svc.config.current.http)
    view = svc.manager.show(resolve_name(svc.registry, body.target()).id)
    props, entry = view.props, view.entry
    info: dict[str, Any] = {"general.architecture": None, "general.name": entry.meta.name}
    if props is not None:
        arch = props.details.get("architecture")
        info = {
            "general.architecture": arch,
            "general.name": props.details.get("name") or entry.meta.name,
            "general.parameter_count": props.details.get("n_params"),
            f"{arch or 'model'}.context_length": props.n_ctx_train or props.n_ctx,
        }
    elif entry.meta.context_length:
        info["model.context_length"] = entry.meta.context_length
    return web.json_response(
        {
            "modelfile": "",
            "parameters": "",
            "template": props.chat_template if props and props.chat_template else "",
            "details": details(entry, props),
            "model_info": info,
            "capabilities": _capabilities(entry),
            "modified_at": _modified(entry),
        }
    )


async def ps(request: web.Request) -> web.Response:
    manager = services(request).manager
    status = manager.status()
    resident = status.resident
    if resident is None or not status.serving:
        return web.json_response({"models": []})
    expires = manager.expires_at()
    model = {
        "name": ollama_name(resident.entry),
        "model": ollama_name(resident.entry),
        "size": resident.entry.size_bytes,
        "digest": digest(resident.entry),
        "details": details(resident.entry, resident.props),
        "expires_at": _iso(expires) if expires else NEVER,
        "size_vram": 0,
        "context_length": resident.props.n_ctx,
    }
    return web.json_response({"models": [model]})


async def delete(request: web.Request) -> web.Response:
    svc = services(request)
    if svc.store is None:
        raise e.NotAvailable("removing models is not available in this daemon")
    body = await read_body(request, ModelRequest, svc.config.current.http)
    entry = resolve_name(svc.registry, body.target())
    # Ollama deletes a loaded model too: it is unloaded first.
    await svc.store.remove(entry.id, force=True)
    return web.json_response({})


def _pull_request(name: str) -> PullRequest:
    if not name.lower().startswith(HUB_PREFIXES):
        raise e.InvalidParams(
            "only Hugging Face repositories can be pulled: hf.co/{owner}/{repo}[:{quant}]",
            param="model",
        )
    repo, quant = hub_reference(name)
    include: tuple[str, ...] = ()
    if quant:
        either_case = "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in quant)
        include = tuple(f"*[-_.]{either_case}.{ext}" for ext in ("gguf", "rkllm"))
    return PullRequest(repo=repo, include=include).checked()


def pull_progress(event: dict[str, Any]) -> dict[str, Any]:
    """One of the store's progress events in Ollama's shape."""
    stage = event.get("stage")
    if stage in ("queued", "resolving"):
        return {"status": "pulling manifest"}
    if stage == "downloading" and event.get("file"):
        return {
            "status": f"pulling {event['file']}",
            "digest": event["file"],
            "total": int(event.get("file_total") or 0),
            "completed": int(event.get("file_bytes") or 0),
        }
    if stage == "verifying":
        return {"status": "verifying sha256 digest"}
    if stage == "publishing":
        return {"status": "writing manifest"}
    return {"status": str(event.get("message") or stage)}


async def pull(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    if svc.store is None:
        raise e.NotAvailable("pulling models is not available in this daemon")
    body = await read_body(request, PullBody, svc.config.current.http)
    wanted = _pull_request(body.target())
    async with svc.store.pull(wanted) as job:
        if body.stream is False:
            await job.result()
            return web.json_response({"status": "success"})

        async def send_all(stream: EventStream) -> None:
            last: dict[str, Any] = {}
            async for event in job.events():
                if event["stage"] in TERMINAL:
                    continue
                shown = pull_progress(event)
                if shown == last:
                    continue
                if _left_file(last, shown):
                    # Progress is sampled: say that the file was fetched whole.
                    await stream.send({**last, "completed": last["total"]})
                await stream.send(shown)
                last = shown
            await job.result()
            if _left_file(last, {}):
                await stream.send({**last, "completed": last["total"]})
            await stream.send({"status": "success"})

        return await streamed(request, send_all, ndjson=True, error_event=ollama_error)


def _left_file(last: dict[str, Any], shown: dict[str, Any]) -> bool:
    """``last`` was a file's progress short of its total, and ``shown`` is not that file."""
    digest = last.get("digest")
    return (
        digest is not None
        and shown.get("digest") != digest
        and last.get("completed", 0) < last.get("total", 0)
    )


def ollama_error(error: e.RkllmdError) -> dict[str, Any]:
    return {"error": error.message, "code": error.code}


ROUTES = (
    Route("GET", "/api/version", version, "Ollama: API version"),
    Route("GET", "/api/tags", tags, "Ollama: the models (name:tag)"),
    Route("POST", "/api/show", show, "Ollama: one model's details", ShowRequest),
    Route("GET", "/api/ps", ps, "Ollama: the loaded model"),
    Route(
        "POST",
        "/api/pull",
        pull,
        "Ollama: pull hf.co/{owner}/{repo}[:{quant}] (NDJSON progress)",
        PullBody,
        admin=True,
    ),
    Route("DELETE", "/api/delete", delete, "Ollama: delete a model", ModelRequest, admin=True),
)
