"""Generations whose reply must have a structure, the same for every dialect.

``reply_run`` is ``streaming.generation`` plus a ``Constraint``:

* on a backend that applies grammars (llama.cpp), a streamed reply passes through
  as it is generated and is checked at its end (a failure then travels in-band);
* otherwise (the NPU, and every reply not streamed) the whole reply is generated,
  checked, and regenerated up to ``structured.retries`` times with the failure told
  to the model; what passes is then served as one piece.

A reply cut by ``max_tokens`` is served as it is, with finish reason "length": the
client's limit cut it, and retrying under the same limit would not help. Any other
reply that fails its check is never served as a success: after the last attempt the
request fails with ``structured_output_failed``, the last attempt attached.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ..errors import StructuredOutputFailed
from ..requests import DoneEvent, GenerateRequest, TokenEvent, Usage
from ..structured import Constraint, constrain, retry_request
from .services import Services
from .streaming import Run, generation


class CheckedRun(Run):
    """A live reply, checked once it has ended."""

    def __init__(self, run: Run, constraint: Constraint) -> None:
        self.model_id = run.model_id
        self.load_seconds, self.first_event_at = run.load_seconds, run.first_event_at
        self._run = run
        self._constraint = constraint

    async def tokens(self) -> AsyncIterator[TokenEvent]:
        pieces = []
        async for token in self._run.tokens():
            pieces.append(token.text)
            yield token
        text = "".join(pieces)
        problem = None if self._run.finish == "length" else self._constraint.problem(text)
        if problem is not None:
            raise StructuredOutputFailed(
                f"the reply does not have the requested structure: {problem}", last_attempt=text
            )

    @property
    def done(self) -> DoneEvent:
        return self._run.done


class SettledRun(Run):
    """A reply generated (and checked) before anything is sent: served as one piece."""

    def __init__(self, model_id: str, text: str, done: DoneEvent) -> None:
        self.model_id = model_id
        self._text = text
        self._done = done

    async def tokens(self) -> AsyncIterator[TokenEvent]:
        if self._text:
            yield TokenEvent(self._text)

    @property
    def done(self) -> DoneEvent:
        return self._done


@asynccontextmanager
async def reply_run(
    svc: Services,
    request: GenerateRequest,
    model: str | None,
    constraint: Constraint | None,
    *,
    stream: bool,
    may_load: bool,
    keep_alive: float | None = None,
) -> AsyncIterator[Run]:
    """A generation whose reply satisfies ``constraint`` (a plain one when None);
    ``may_load`` as for ``streaming.generation``."""
    http = svc.config.current.http
    if constraint is None:
        async with generation(
            svc.manager, http, request, model, may_load=may_load, keep_alive=keep_alive
        ) as run:
            yield run
        return
    request = constrain(request, constraint)
    attempts = svc.config.current.structured.retries + 1
    usage = Usage()
    load_seconds = 0.0
    attempt_request = request
    text, problem = "", ""
    for attempt in range(attempts):
        async with generation(
            svc.manager, http, attempt_request, model, may_load=may_load, keep_alive=keep_alive
        ) as run:
            props = svc.manager.resident_props()
            if stream and props is not None and props.grammar:
                yield CheckedRun(run, constraint)
                return
            text = await run.text()
            done = run.done
        _add(usage, done.usage)
        load_seconds += run.load_seconds
        found = None if run.finish == "length" else constraint.problem(text)
        if found is None:
            settled = SettledRun(
                run.model_id, text, DoneEvent(done.finish_reason, usage, done.perf)
            )
            settled.load_seconds, settled.first_event_at = load_seconds, run.first_event_at
            yield settled
            return
        problem = found
        attempt_request = retry_request(request, text, problem, attempt + 1)
    raise StructuredOutputFailed(
        f"no reply had the requested structure after {attempts} attempts: {problem}",
        last_attempt=text,
        attempts=attempts,
    )


def _add(total: Usage, usage: Usage) -> None:
    total.prompt_tokens += usage.prompt_tokens
    total.completion_tokens += usage.completion_tokens
    total.cached_tokens += usage.cached_tokens
