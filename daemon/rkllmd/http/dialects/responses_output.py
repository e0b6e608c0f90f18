"""The Responses API's output: its items (message, reasoning, function call), the
usage block, and the numbered typed events of a streamed response."""

from __future__ import annotations

import uuid
from typing import Any

from ...chat.parse import Delta, ToolCall
from ...chat.turn import ChatReply
from ...requests import Usage
from ..sse import EventStream

Item = dict[str, Any]


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def message_item(item_id: str, text: str, status: str = "completed") -> Item:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def reasoning_item(item_id: str, text: str) -> Item:
    content = [{"type": "reasoning_text", "text": text}]
    return {"type": "reasoning", "id": item_id, "summary": [], "content": content}


def call_item(item_id: str, call: ToolCall, arguments: str | None = None) -> Item:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments if arguments is None else arguments,
        "status": "completed" if arguments is None else "in_progress",
    }


def usage_body(usage: Usage) -> Item:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


def output_items(reply: ChatReply, reasoning: str, content: str) -> list[Item]:
    items: list[Item] = []
    if reasoning:
        items.append(reasoning_item(new_id("rs"), reasoning))
    if content or not reply.calls:
        items.append(message_item(new_id("msg"), content))
    items.extend(call_item(new_id("fc"), call) for call in reply.calls)
    return items


class Events:
    """The typed events of one streamed response, numbered, and the items they built."""

    def __init__(self, out: EventStream) -> None:
        self._out = out
        self._sequence = 0
        self.items: list[Item] = []
        self._open: tuple[str, str, list[str]] | None = None  # kind, item id, texts

    async def send(self, name: str, **fields: Any) -> None:
        await self._out.send_event(
            name, {"type": name, "sequence_number": self._sequence, **fields}
        )
        self._sequence += 1

    async def delta(self, delta: Delta) -> None:
        if self._open is None or self._open[0] != delta.kind:
            if self._open is not None:
                await self.close_open()
            await self._start(delta.kind)
        assert self._open is not None
        self._open[2].append(delta.text)
        where = {"item_id": self._open[1], "output_index": len(self.items), "content_index": 0}
        name = (
            "response.reasoning_text.delta"
            if delta.kind == "reasoning"
            else "response.output_text.delta"
        )
        extra: Item = {} if delta.kind == "reasoning" else {"logprobs": []}
        await self.send(name, delta=delta.text, **where, **extra)

    async def _start(self, kind: str) -> None:
        item_id = new_id("rs" if kind == "reasoning" else "msg")
        self._open = (kind, item_id, [])
        empty = (
            reasoning_item(item_id, "")
            if kind == "reasoning"
            else message_item(item_id, "", "in_progress")
        )
        empty["content"] = []  # parts are added by their own events
        await self.send("response.output_item.added", output_index=len(self.items), item=empty)
        if kind != "reasoning":
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            where = {"item_id": item_id, "output_index": len(self.items), "content_index": 0}
            await self.send("response.content_part.added", part=part, **where)

    async def finish_text(self, calls: int) -> None:
        """Close the open item; a reply with no text and no call still has its message."""
        if self._open is None and not self.items and not calls:
            await self._start("content")
        if self._open is not None:
            await self.close_open()

    async def close_open(self) -> None:
        assert self._open is not None
        kind, item_id, texts = self._open
        text = "".join(texts)
        where = {"item_id": item_id, "output_index": len(self.items), "content_index": 0}
        if kind == "reasoning":
            item = reasoning_item(item_id, text)
            await self.send("response.reasoning_text.done", text=text, **where)
        else:
            item = message_item(item_id, text)
            await self.send("response.output_text.done", text=text, logprobs=[], **where)
            await self.send("response.content_part.done", part=item["content"][0], **where)
        await self.send("response.output_item.done", output_index=len(self.items), item=item)
        self.items.append(item)
        self._open = None

    async def call(self, call: ToolCall) -> None:
        item_id = new_id("fc")
        index = len(self.items)
        await self.send(
            "response.output_item.added", output_index=index, item=call_item(item_id, call, "")
        )
        where = {"item_id": item_id, "output_index": index}
        await self.send("response.function_call_arguments.delta", delta=call.arguments, **where)
        await self.send("response.function_call_arguments.done", arguments=call.arguments, **where)
        item = call_item(item_id, call)
        await self.send("response.output_item.done", output_index=index, item=item)
        self.items.append(item)
