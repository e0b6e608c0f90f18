"""The streamed-answer path when the client has gone before the stream's end."""

from __future__ import annotations

import contextlib
import logging

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from rkllmd.http.sse import EventStream
from rkllmd.http.streaming import streamed


async def test_a_client_gone_before_the_end_is_not_an_error(
    aiohttp_client: type[TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    ended: list[web.StreamResponse] = []

    async def send_all(stream: EventStream) -> None:
        await stream.send({"text": "the last piece"})
        # The client vanishes here, after the last piece and before the end of the
        # stream, and before aiohttp cancels the handler (the soak met this once).
        transport = stream.response._req.transport  # type: ignore[union-attr]
        transport.abort()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = await streamed(request, send_all)
        ended.append(response)
        return response

    app = web.Application()
    app.router.add_post("/stream", handler)
    client = await aiohttp_client(app)  # type: ignore[operator]
    caplog.set_level(logging.DEBUG)
    with contextlib.suppress(aiohttp.ClientError):  # the connection is cut on purpose
        async with client.post("/stream") as response:
            await response.read()
    await client.close()  # the server finishes the request before the app goes away
    assert ended, "the handler did not return"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    assert any("client left during the stream" in r.getMessage() for r in caplog.records)
