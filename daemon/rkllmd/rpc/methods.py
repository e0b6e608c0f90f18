"""Control methods: parse params, call the ModelManager, render the result.

Each method is wrapped once: parameters are validated against its schema, every
RkllmdError becomes a JSON-RPC error with a stable ``data.code``, and anything
unexpected becomes a generic -32603 whose detail goes only to the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from jsonrpcserver import Error, Result, Success
from pydantic import ValidationError

from ..catalog.registry import ModelRegistry
from ..chat.parse import Delta
from ..chat.turn import ChatReply, generate_request
from ..config import Config, LiveConfig
from ..errors import InvalidParams, NotAvailable, RkllmdError
from ..images import decode_grouped
from ..manager import ModelManager
from ..requests import DoneEvent, LoadOptions
from ..store import ModelStore, PullRequest
from ..store.job import TERMINAL
from ..templates import TemplateLibrary
from . import render
from . import schemas as s
from .errors import INTERNAL_ERROR, INVALID_PARAMS, rpc_code

logger = logging.getLogger(__name__)

Notify = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Peer:
    pid: int
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class CallContext:
    peer: Peer
    notify: Notify


Impl = Callable[[CallContext, Any], Awaitable[Any]]
Method = Callable[..., Awaitable[Result]]


def _validation_data(exc: ValidationError) -> dict[str, Any]:
    problems = [
        {"field": ".".join(str(p) for p in err["loc"]), "problem": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    return {"code": "invalid_params", "errors": problems}


def rpc_method(
    name: str, schema: type[s.Params], *, mutating: bool = False
) -> Callable[[Impl], Method]:
    def wrap(impl: Impl) -> Method:
        async def method(ctx: CallContext, **params: Any) -> Result:
            try:
                parsed = schema.model_validate(params)
            except ValidationError as exc:
                return Error(INVALID_PARAMS, "Invalid params", _validation_data(exc))
            if mutating:
                logger.info("%s called by pid %d uid %d", name, ctx.peer.pid, ctx.peer.uid)
            try:
                return Success(await impl(ctx, parsed))
            except RkllmdError as exc:
                return Error(rpc_code(exc), exc.message, exc.to_data())
            except ConnectionError:
                # The caller is gone (its generation was aborted on the way out);
                # this answer is never delivered.
                return Error(INTERNAL_ERROR, "client went away", {"code": "aborted"})
            except Exception:
                logger.exception("internal error in %s", name)
                return Error(INTERNAL_ERROR, "Internal error", {"code": "internal_error"})

        # No functools.wraps: jsonrpcserver binds arguments against the signature
        # it finds, and must see (ctx, **params), not the implementation's.
        method.__name__ = name
        return method

    return wrap


def build_methods(
    manager: ModelManager,
    registry: ModelRegistry,
    config: LiveConfig,
    store: ModelStore | None = None,
) -> dict[str, Method]:
    @rpc_method("status", s.NoParams)
    async def status(ctx: CallContext, p: s.NoParams) -> Any:
        return render.status(manager.status())

    listed = render.ModelRows()

    @rpc_method("list", s.NoParams)
    async def list_(ctx: CallContext, p: s.NoParams) -> Any:
        result: dict[str, Any] = {"models": listed.rows(manager.list_models())}
        result["pulls"] = await store.pulls() if store is not None else []
        return result

    @rpc_method("show", s.ModelParams)
    async def show(ctx: CallContext, p: s.ModelParams) -> Any:
        return render.shown(manager.show(p.model))

    @rpc_method("load", s.LoadParams, mutating=True)
    async def load(ctx: CallContext, p: s.LoadParams) -> Any:
        template = None
        if p.chat_template is not None:
            library = TemplateLibrary(config.current.templates_dir)
            template = await asyncio.to_thread(library.resolve, p.chat_template)
        options = LoadOptions(
            p.ctx_size,
            p.threads,
            p.batch_size,
            template.text if template else None,
            template.name if template and template.origin != "inline" else None,
            npu_cores=p.npu_cores,
            parallel=p.parallel,
            draft_model=p.draft_model,
            lookup_ngram=p.lookup_ngram,
            draft_tokens=p.draft_tokens,
        )

        async def progress(stage: str, fraction: float | None, message: str) -> None:
            await ctx.notify("progress", {"stage": stage, "fraction": fraction, "message": message})

        if p.embedding:
            if options != LoadOptions():
                raise InvalidParams("an embedding model takes no load options")
            return render.status(
                await manager.load_embedding(p.model, progress if p.progress else None)
            )
        st = await manager.load(p.model, options, progress if p.progress else None)
        return render.status(st)

    @rpc_method("unload", s.UnloadParams, mutating=True)
    async def unload(ctx: CallContext, p: s.UnloadParams) -> Any:
        if p.embedding:
            before = manager.status().embedding
            result = render.status(await manager.unload_embedding())
        else:
            before = manager.status().resident
            result = render.status(await manager.unload())
        # What went (null: nothing was loaded), so a caller can say which.
        return {**result, "unloaded": before.entry.id if before else None}

    @rpc_method("rescan", s.NoParams, mutating=True)
    async def rescan(ctx: CallContext, p: s.NoParams) -> Any:
        await registry.scan()
        return {"models": len(registry.entries())}

    @rpc_method("chat", s.ChatParams, mutating=True)
    async def chat(ctx: CallContext, p: s.ChatParams) -> Any:
        return await _chat(manager, ctx, p, config.current)

    @rpc_method("embed", s.EmbedParams)
    async def embed(ctx: CallContext, p: s.EmbedParams) -> Any:
        texts = [p.input] if isinstance(p.input, str) else list(p.input)
        result = await manager.embed(texts, p.model)
        tokens = result.prompt_tokens
        return {
            "model": result.model_id,
            "data": result.vectors,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    @rpc_method("pull", s.PullParams, mutating=True)
    async def pull(ctx: CallContext, p: s.PullParams) -> Any:
        if store is None:
            raise NotAvailable("pulling models is not available in this daemon")
        return await _pull(store, ctx, p)

    @rpc_method("remove", s.RemoveParams, mutating=True)
    async def remove(ctx: CallContext, p: s.RemoveParams) -> Any:
        if store is None:
            raise NotAvailable("removing models is not available in this daemon")
        if p.all:
            return await store.remove_all(force=p.force)
        assert p.model is not None
        return await store.remove(p.model, force=p.force)

    return {
        "status": status,
        "list": list_,
        "show": show,
        "load": load,
        "unload": unload,
        "rescan": rescan,
        "chat": chat,
        "embed": embed,
        "pull": pull,
        "remove": remove,
    }


async def _pull(store: ModelStore, ctx: CallContext, p: s.PullParams) -> Any:
    """Progress notifications while it runs; a caller that goes away cancels the pull
    (its parts stay in staging, so pulling again resumes)."""
    request = PullRequest(
        repo=p.repo,
        file=p.file,
        include=tuple(p.include or ()),
        exclude=tuple(p.exclude or ()),
        revision=p.revision,
    )
    async with store.pull(request) as job:
        if p.progress:
            async for event in job.events():
                if event["stage"] not in TERMINAL:
                    await ctx.notify("progress", event)
        return await job.result()


async def _send_deltas(ctx: CallContext, stream: bool, deltas: list[Delta]) -> None:
    """Stream parsed pieces as ``token`` notifications when asked to
    (``{"text": ...}`` for content, ``{"reasoning": ...}`` for reasoning)."""
    if not stream:
        return
    for delta in deltas:
        key = "text" if delta.kind == "content" else "reasoning"
        await ctx.notify("token", {key: delta.text})


def _timings(started: float, first: float | None, completion_tokens: int) -> dict[str, Any]:
    elapsed = time.monotonic() - (first or started)
    return {
        "ttft_ms": round(((first or time.monotonic()) - started) * 1000, 2),
        "tokens_per_s": round(completion_tokens / elapsed, 2) if elapsed > 0 else None,
    }


async def _chat(manager: ModelManager, ctx: CallContext, p: s.ChatParams, config: Config) -> Any:
    request = generate_request(
        p,
        p.messages,
        tools=p.tools,
        max_tokens=p.max_tokens,
        default_max=config.generation.default_max_tokens,
        enable_thinking=p.enable_thinking,
        images=decode_grouped([m.images() for m in p.messages], config.vision),
    )
    started = time.monotonic()
    first: float | None = None
    async with manager.generation(request, p.model) as gen:
        props = manager.resident_props()
        reply = ChatReply(
            tools=bool(p.tools), starts_in_reasoning=bool(props and props.reasoning_starts_open)
        )
        async for event in gen.events:
            if isinstance(event, DoneEvent):
                await _send_deltas(ctx, p.stream, reply.finish())
                return {
                    "model": gen.model_id,
                    "message": reply.message(),
                    "finish_reason": reply.finish_reason(event.finish_reason),
                    "usage": event.usage.to_dict(),
                    **({"perf": event.perf} if event.perf else {}),
                    "timings": _timings(started, first, event.usage.completion_tokens),
                }
            first = first or time.monotonic()
            await _send_deltas(ctx, p.stream, reply.feed(event.text))
    raise RkllmdError("the generation ended without a result")
