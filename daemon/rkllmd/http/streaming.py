"""Generations and streamed answers, the same for every HTTP dialect.

``generation`` starts the request's deadlines before it waits for the queue and
the load, and pulls the first event before the caller answers anything, so all
that can go wrong up to there is still a plain HTTP error. ``streamed`` sends
what goes wrong after the first byte in-band, then ends the stream.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

from aiohttp import web

from .. import errors as e
from ..config import HttpSection
from ..manager import ModelManager
from ..requests import DoneEvent, GenerateRequest, GenerationEvent, TokenEvent
from .errors import error_body
from .services import services
from .sse import Deadline, EventStream

logger = logging.getLogger(__name__)

FINISH = {"stop": "stop", "length": "length", "abort": "stop"}


class Run:
    """One generation's reply as the dialects read it: its token events, then its end."""

    model_id: str
    load_seconds: float = 0.0  # spent loading the model for this request
    first_event_at: float = 0.0  # time.monotonic() when the first event arrived

    def tokens(self) -> AsyncIterator[TokenEvent]:
        """Every token event: its text, choice index and log-probabilities."""
        raise NotImplementedError

    async def texts(self) -> AsyncIterator[str]:
        async for token in self.tokens():
            yield token.text

    async def text(self) -> str:
        return "".join([piece async for piece in self.texts()])

    @property
    def done(self) -> DoneEvent:
        raise NotImplementedError

    @property
    def finish(self) -> str:
        """The OpenAI finish reason."""
        return FINISH[self.done.finish_reason]

    def finish_of(self, index: int) -> str:
        """The OpenAI finish reason of one choice (n > 1)."""
        reasons = self.done.choices
        return FINISH[reasons[index] if reasons else self.done.finish_reason]


class LiveRun(Run):
    """A running generation's token events, pulled under the request's deadlines."""

    def __init__(
        self,
        model_id: str,
        events: AsyncIterator[GenerationEvent],
        deadline: Deadline,
        first: GenerationEvent,
        load_seconds: float = 0.0,
    ) -> None:
        self.model_id = model_id
        self.load_seconds = load_seconds
        self.first_event_at = time.monotonic()
        self._events = events
        self._deadline = deadline
        self._event = first

    async def tokens(self) -> AsyncIterator[TokenEvent]:
        while isinstance(self._event, TokenEvent):
            yield self._event
            self._event = await self._deadline.next(self._events)

    @property
    def done(self) -> DoneEvent:
        if not isinstance(self._event, DoneEvent):
            raise RuntimeError("the generation has not ended yet")
        return self._event


UNRESOLVED = web.RequestKey("unresolved_model", str)  # the name that resolved to nothing
NOT_FOUND_HEADER = "X-Rkllmd-Model-Not-Found"


def model_to_use(request: web.Request, name: str | None) -> str | None:
    """The model to ask the manager for on the OpenAI routes.

    A name that resolves to nothing is answered by the resident model when
    ``http.unknown_model`` is "resident" and a model is resident: the answer's
    ``model`` then names the resident one and a response header repeats the name
    that was not found. Otherwise (nothing resident, "error") it is the usual 404.
    """
    svc = services(request)
    if name is None or svc.config.current.http.unknown_model == "error":
        return name
    try:
        svc.registry.resolve(name)
    except e.ModelNotFound:
        if svc.manager.status().resident is None:
            raise
        request[UNRESOLVED] = name
        return None
    return name


async def say_unresolved(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: name the model that was not found, whatever the answer's shape."""
    name = request.get(UNRESOLVED)
    if name is not None:
        response.headers[NOT_FOUND_HEADER] = quote(name, safe=" !#$&'()*+,/:;=?@[]~")


@asynccontextmanager
async def generation(
    manager: ModelManager,
    http: HttpSection,
    request: GenerateRequest,
    model: str | None,
    *,
    may_load: bool,
    keep_alive: float | None = None,
) -> AsyncIterator[Run]:
    """``may_load``: whether this request's key may load or replace a model
    (``edge.may_load_models``); each dialect passes it, none can forget it."""
    deadline = Deadline(http.first_token_timeout_seconds, http.request_timeout_seconds)
    async with manager.generation(request, model, may_load=may_load, keep_alive=keep_alive) as gen:
        first = await deadline.next(gen.events)
        yield LiveRun(gen.model_id, gen.events, deadline, first, gen.load_seconds)


async def streamed(
    request: web.Request,
    send_all: Callable[[EventStream], Awaitable[None]],
    *,
    ndjson: bool = False,
    error_event: Callable[[e.RkllmdError], dict[str, Any]] | None = None,
    done_marker: bool = True,
) -> web.StreamResponse:
    """Open an SSE (or NDJSON) stream, let ``send_all`` fill it, and end it.

    ``error_event``: the dialect's own shape of an error after the first byte."""
    stream = await EventStream.open(request, ndjson=ndjson)
    try:
        try:
            await send_all(stream)
        except e.RkllmdError as exc:
            if error_event is not None:
                await stream.send(error_event(exc))
            else:
                body = error_body(exc)
                await stream.send({"type": "error", **body} if ndjson else body)
        await stream.done(marker=done_marker)
    except ConnectionError:
        # The client left before aiohttp noticed and cancelled this handler (most
        # often between the last piece and the end of the stream). The generation
        # is already stopped; there is nobody left to tell, and nothing to log.
        logger.debug("client left during the stream of %s", request.path)
    return stream.response
