"""OpenAI's embeddings route: POST /v1/embeddings (text, token ids, batches; float
or base64 vectors; ``dimensions`` for models trained to be shortened)."""

from __future__ import annotations

import base64
import math
import struct
from typing import Annotated, Literal

from aiohttp import web
from pydantic import Field

from ... import errors as e
from ...requests import EmbedItem
from ...wire import NUMBER, EmbedInput
from ..edge import may_load_models, read_body
from ..routing import Route
from ..schemas import Body, ModelName
from ..services import services
from ..streaming import model_to_use
from .openai import TokenIds


class EmbeddingRequest(Body):
    model: ModelName | None = None
    input: EmbedInput | TokenIds | Annotated[list[TokenIds], Field(min_length=1, max_length=256)]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, Field(ge=1, le=65_536), NUMBER] | None = None

    def items(self) -> list[EmbedItem]:
        value = self.input
        if isinstance(value, str):
            return [value]
        items: list[EmbedItem] = []
        for part in value:
            if isinstance(part, int):
                return [tuple(v for v in value if isinstance(v, int))]  # one token-id list
            items.append(part if isinstance(part, str) else tuple(part))
        return items


async def embeddings(request: web.Request) -> web.Response:
    svc = services(request)
    http = svc.config.current.http
    body = await read_body(request, EmbeddingRequest, http)
    result = await svc.manager.embed(
        body.items(),
        model_to_use(request, body.model),
        may_load=may_load_models(request, http),
    )
    vectors = result.vectors
    if body.dimensions is not None:
        meta = svc.registry.resolve(result.model_id).meta
        vectors = [shortened(v, body.dimensions, meta.matryoshka) for v in vectors]
    encoding = body.encoding_format or "float"
    data = [
        {"object": "embedding", "index": i, "embedding": _encode(v, encoding)}
        for i, v in enumerate(vectors)
    ]
    tokens = result.prompt_tokens
    return web.json_response(
        {
            "object": "list",
            "data": data,
            "model": result.model_id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def shortened(vector: list[float], size: int, matryoshka: bool) -> list[float]:
    """The first ``size`` dimensions, renormalised: meaningful only for models trained
    for it (Matryoshka representation learning), which their metadata declares."""
    native = len(vector)
    if size == native:
        return vector
    if not matryoshka or size > native:
        trained = "" if matryoshka else " and the model's metadata declares no Matryoshka training"
        raise e.UnsupportedByModel(
            f"dimensions must be {native} (the model's embedding size){trained}",
            param="dimensions",
        )
    head = vector[:size]
    norm = math.sqrt(sum(v * v for v in head)) or 1.0
    return [v / norm for v in head]


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


ROUTES = (Route("POST", "/v1/embeddings", embeddings, "OpenAI embeddings", EmbeddingRequest),)
