"""TabbyAPI's token routes: encode and decode with the resident model's tokenizer
(``/v1/token/*`` and the Go client's ``/v1/tokens/*``).

A list of chat messages is encoded as the prompt a chat request with them becomes,
exactly as a generation sees it (the model's template with the assistant's
generation prompt, its BOS handling); ``add_bos_token`` and
``encode_special_tokens`` apply to plain text. GGUF models use llama.cpp's
tokenizer; ``.rkllm`` models the ``tokenizer.json`` next to the model file (without
it: 400 ``tokenizer_unavailable``).
"""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from pydantic import ConfigDict, Field, StrictBool

from ....chat.turn import to_message
from ....requests import GenerateRequest
from ...edge import read_body
from ...routing import Route
from ...schemas import Body, ChatMessageIn, TokenId
from ...services import services


class TokenEncodeRequest(Body):
    model_config = ConfigDict(extra="ignore")

    text: (
        Annotated[str, Field(max_length=4_194_304)]
        | Annotated[list[ChatMessageIn], Field(min_length=1, max_length=4096)]
    )
    add_bos_token: StrictBool = True
    encode_special_tokens: StrictBool = True
    decode_special_tokens: StrictBool = True


class TokenDecodeRequest(Body):
    tokens: Annotated[list[TokenId], Field(max_length=1_048_576)]
    add_bos_token: StrictBool = True
    encode_special_tokens: StrictBool = True
    decode_special_tokens: StrictBool = True


async def encode(request: web.Request) -> web.Response:
    svc = services(request)
    body = await read_body(request, TokenEncodeRequest, svc.config.current.http)
    text: str | None = None
    chat: GenerateRequest | None = None
    if isinstance(body.text, str):
        text = body.text
    else:
        chat = GenerateRequest(messages=tuple(to_message(m) for m in body.text))
    tokens = await svc.manager.tokenize(
        text, chat, add_bos=body.add_bos_token, special=body.encode_special_tokens
    )
    answer: dict[str, Any] = {"tokens": tokens, "length": len(tokens)}
    return web.json_response(answer)


async def decode(request: web.Request) -> web.Response:
    svc = services(request)
    body = await read_body(request, TokenDecodeRequest, svc.config.current.http)
    text = await svc.manager.detokenize(body.tokens, special=body.decode_special_tokens)
    return web.json_response({"text": text})


ROUTES = (
    Route("POST", "/v1/token/encode", encode, "TabbyAPI: text to token ids", TokenEncodeRequest),
    Route("POST", "/v1/tokens/encode", encode, "TabbyAPI (Go client): encode", TokenEncodeRequest),
    Route("POST", "/v1/token/decode", decode, "TabbyAPI: token ids to text", TokenDecodeRequest),
    Route("POST", "/v1/tokens/decode", decode, "TabbyAPI (Go client): decode", TokenDecodeRequest),
)
