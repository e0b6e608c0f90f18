"""Wire-schema pieces every HTTP dialect shares: names, messages, sampling.

Each dialect keeps its own request bodies next to its routes (``dialects/``).
Unknown fields are ignored on purpose: OpenAI clients send extras (``user``,
``metadata``, ...). Known fields are validated strictly by range, and features
we do not implement are rejected with 400 instead of silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, field_validator

from ..config import VisionSection
from ..images import check_count, decode_grouped
from ..requests import ImageInput
from ..wire import NUMBER, SamplingFields
from .imagefetch import fetch_images

# Documented in /openapi.json only (the registry, hub.py and selection.py enforce the
# same rules and pick the error codes); a fuzzer then knows what the daemon accepts.
# `[\s\S]*` instead of `.*` and a control-character lookahead: ECMA and Python agree.
MODEL_NAME_PATTERN = (
    r"^(?![\s\S]*[\x00-\x1f\x7f\\])(?![A-Za-z]:)(?!/)(?!(?:[\s\S]*/)?\.\.?(?:/|$))[\s\S]+$"
)
_HUB_NAME = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
REPO_ID_PATTERN = rf"^(?![\s\S]*(?:\.\.|--|\n))(?:{_HUB_NAME})/(?:{_HUB_NAME})$"
REVISION_PATTERN = r"^(?![\s\S]*(?:\.\.|\n))[A-Za-z0-9_][A-Za-z0-9_./-]{0,254}$"
REPO_FILE_PATTERN = (
    r"^(?![\s\S]*[\x00-\x1f\x7f\\])(?!/)(?![\s\S]:)(?!(?:[\s\S]*/)?\.{0,2}(?:/|$))[\s\S]+$"
)
GLOB_PATTERN = r"^(?![\s\S]*[\x00-\x1f\\])[\s\S]+$"


def documented(pattern: str, max_length: int, min_length: int = 1) -> Any:
    return Field(
        min_length=min_length, max_length=max_length, json_schema_extra={"pattern": pattern}
    )


ModelName = Annotated[str, documented(MODEL_NAME_PATTERN, 255)]


def _exactly_false(value: Any) -> Any:
    """``Literal[False]`` alone also takes 0 (0 == False)."""
    if value is not False:
        raise ValueError("not supported: only false is accepted")
    return value


NotSupported = Annotated[Literal[False], BeforeValidator(_exactly_false)]


def _not_a_bool(value: Any) -> Any:
    """JSON true/false are not numbers; pydantic's int would read them as 1 and 0.
    (Strict ints would refuse 1.0 too, which JSON Schema counts as an integer.)"""
    if isinstance(value, bool):
        raise ValueError("a token id is an integer, not true or false")
    return value


TokenId = Annotated[int, Field(ge=0, le=2**31 - 1), BeforeValidator(_not_a_bool)]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


PART_TYPES = ("text", "input_text", "output_text", "image_url", "input_image")


class ImageUrl(Body):
    url: Annotated[str, Field(max_length=64 * 1024 * 1024)]
    detail: str | None = None


class ContentPart(Body):
    """A text part, or an image (chat's ``image_url``, the Responses API's ``input_image``)."""

    type: Annotated[str, Field(json_schema_extra={"enum": list(PART_TYPES)})]
    text: str | None = None
    image_url: ImageUrl | Annotated[str, Field(max_length=64 * 1024 * 1024)] | None = None

    @field_validator("type")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in PART_TYPES:
            raise ValueError(
                f"content parts of type {value!r} are not supported (text and images only)"
            )
        return value

    def image(self) -> str | None:
        """The image's data URL (or whatever the client sent as one) if this part is one."""
        if self.type not in ("image_url", "input_image"):
            return None
        url = self.image_url.url if isinstance(self.image_url, ImageUrl) else self.image_url
        return url or ""


class ChatMessageIn(Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Annotated[str, Field(max_length=4_194_304)] | list[ContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content if part.image() is None)
        return self.content or ""

    def images(self) -> list[str]:
        if not isinstance(self.content, list):
            return []
        return [url for part in self.content if (url := part.image()) is not None]


async def message_images(
    messages: list[ChatMessageIn], limits: VisionSection
) -> list[tuple[ImageInput, ...]]:
    """Each message's images, decoded and bounded like every dialect's
    (``rkllmd.images``), the URLs the owner allows fetched first (``imagefetch``);
    whether the model can see them is the manager's question."""
    groups = [m.images() for m in messages]
    check_count(sum(len(group) for group in groups), limits)  # before fetching any
    sent = iter(await fetch_images([url for group in groups for url in group], limits))
    return decode_grouped([[(next(sent), None) for _ in group] for group in groups], limits)


class StreamOptions(Body):
    include_usage: StrictBool | None = None


class Sampling(Body, SamplingFields):
    """The sampling fields plus what OpenAI-style generation routes add to them.

    As in ``SamplingFields``, null means "not set" for each of them. ``user``,
    ``metadata`` and ``service_tier`` need no field: unknown fields are ignored.
    """

    # Choices from one prompt: llama.cpp up to its parallel sequences, the NPU 1.
    n: Annotated[int, Field(ge=1, le=8), NUMBER] | None = None
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None

    @property
    def choices(self) -> int:
        return self.n or 1

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)
