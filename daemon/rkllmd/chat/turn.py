"""One chat turn as both skins (JSON-RPC and HTTP) see it.

In: a validated wire body becomes the ``GenerateRequest`` the manager runs.
Out: the generated text, parsed into content, reasoning and tool calls, becomes
the assistant message both skins answer with (OpenAI's message shape).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ..requests import ChatMessage, GenerateRequest, ImageInput
from ..wire import SamplingFields, to_sampling
from .parse import Delta, OutputParser, ToolCall

# OpenAI's newer name for the system turn; chat templates know only "system".
ROLES = {"developer": "system"}


class WireMessage(Protocol):
    @property
    def role(self) -> str: ...
    @property
    def tool_calls(self) -> list[dict[str, Any]] | None: ...
    @property
    def tool_call_id(self) -> str | None: ...
    def text(self) -> str: ...


def to_message(message: WireMessage, images: tuple[ImageInput, ...] = ()) -> ChatMessage:
    role = ROLES.get(message.role, message.role)
    return ChatMessage(
        role, message.text(), tuple(message.tool_calls or ()), message.tool_call_id, images
    )


def generate_request(
    body: SamplingFields,
    messages: Sequence[WireMessage],
    *,
    tools: Sequence[dict[str, Any]] | None,
    max_tokens: int | None,
    default_max: int,
    enable_thinking: bool | None,
    images: Sequence[tuple[ImageInput, ...]] = (),
) -> GenerateRequest:
    """A chat body's turn: its messages (with ``images[i]`` on message i, decoded at
    the edge) and tools, sampled as its fields say."""
    per_message = list(images) + [()] * (len(messages) - len(images))
    return GenerateRequest(
        messages=tuple(to_message(m, i) for m, i in zip(messages, per_message, strict=True)),
        sampling=to_sampling(body, max_tokens, default_max),
        tools=tuple(tools or ()),
        enable_thinking=enable_thinking,
    )


class ChatReply:
    """The assistant's answer taking shape: text in, parsed pieces and one message out."""

    def __init__(
        self, *, tools: bool, starts_in_reasoning: bool, single_call: bool = False
    ) -> None:
        # Some templates (DeepSeek-R1 distills) open <think> in the prompt itself.
        self._parser = OutputParser(
            reasoning=True, tools=tools, starts_in_reasoning=starts_in_reasoning
        )
        self._parts: dict[str, list[str]] = {"content": [], "reasoning": []}
        self.calls: list[ToolCall] = []
        self._single = single_call  # parallel_tool_calls false: the first call only

    def feed(self, text: str) -> list[Delta]:
        return self._keep(self._parser.feed(text))

    def finish(self) -> list[Delta]:
        """The last pieces; ``calls`` holds the tool calls from here on."""
        deltas, self.calls = self._parser.finish()
        if self._single:
            self.calls = self.calls[:1]
        return self._keep(deltas)

    def finish_reason(self, reason: str) -> str:
        return "tool_calls" if self.calls else reason

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self._parts["content"])}
        if self._parts["reasoning"]:
            message["reasoning_content"] = "".join(self._parts["reasoning"])
        if self.calls:
            message["tool_calls"] = [call.to_openai() for call in self.calls]
        return message

    def _keep(self, deltas: list[Delta]) -> list[Delta]:
        for delta in deltas:
            self._parts[delta.kind].append(delta.text)
        return deltas
