"""Images on the typed request: they cross the worker pipe (JSON lines) intact."""

from __future__ import annotations

import os

from rkllmd.requests import ChatMessage, GenerateRequest, ImageInput, Sampling
from rkllmd.worker import protocol


def test_images_cross_the_worker_pipe_byte_for_byte() -> None:
    first = ImageInput(os.urandom(5000), "image/jpeg", 640, 480)
    second = ImageInput(bytes(range(256)), "image/png", 1, 1)
    request = GenerateRequest(
        messages=(
            ChatMessage("system", "be brief"),
            ChatMessage("user", "compare", images=(first, second)),
        ),
        sampling=Sampling(temperature=0.0, stop=("x",), logit_bias=((3, -1.5),)),
        tools=({"type": "function", "function": {"name": "f"}},),
    )
    line = protocol.encode(protocol.GENERATE, id=1, request=request.to_dict())
    back = GenerateRequest.from_dict(protocol.decode(line)["request"])
    assert back == request
    assert back.images == (first, second)
    assert "images" not in request.to_dict()["messages"][0]  # text-only turns stay lean
