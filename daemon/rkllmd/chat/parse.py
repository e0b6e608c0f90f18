"""Split generated text into content, reasoning and tool calls, incrementally.

Works on the text any backend streams (after stop strings are applied):

* ``<think>…</think>`` becomes ``reasoning`` deltas (``starts_in_reasoning`` when
  the chat template already opened the block in the prompt, so the output begins
  inside it). A stray ``</think>`` in content is dropped.
* ``<tool_call>{"name": …, "arguments": {…}}</tool_call>`` blocks (Qwen/Hermes)
  become ``ToolCall``s, returned by ``finish()``. A block whose body is not a valid
  call is given back verbatim as content, so nothing the model wrote is lost.
* A tag split across chunks is held back until it is known to be (or not be) a
  tag. Whitespace next to tag boundaries is trimmed: after ``<think>`` and
  ``</think>``, before ``</think>``, and around tool calls.

With ``reasoning=False`` and ``tools=False`` the parser is a pass-through.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from ..untrusted import load_json

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
TOOL_OPEN = "<tool_call>"
TOOL_CLOSE = "</tool_call>"

Mode = Literal["content", "reasoning", "tool"]


@dataclass(frozen=True, slots=True)
class Delta:
    kind: Literal["content", "reasoning"]
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI's ``function.arguments``

    def to_openai(self) -> dict[str, Any]:
        """The call as an item of OpenAI's ``tool_calls`` (both skins answer in this shape)."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def parse_tool_call(body: str) -> ToolCall | None:
    """A ToolCall from the JSON inside ``<tool_call>``, or None if it is not one."""
    try:
        data = load_json(body)  # model output: no nesting beyond the stack either
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    name = data.get("name")
    if not isinstance(name, str) or not name:
        return None
    args: Any = data.get("arguments", data.get("parameters", {}))
    if isinstance(args, str):
        try:
            load_json(args)
        except ValueError:
            return None
        text = args
    else:
        text = json.dumps(args, ensure_ascii=False)
    return ToolCall(id=new_call_id(), name=name, arguments=text)


def _partial_tag_suffix(text: str, tags: tuple[str, ...]) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of a tag."""
    longest = 0
    for tag in tags:
        for size in range(min(len(tag) - 1, len(text)), longest, -1):
            if tag.startswith(text[-size:]):
                longest = size
                break
    return longest


class OutputParser:
    def __init__(self, *, reasoning: bool, tools: bool, starts_in_reasoning: bool = False) -> None:
        self._reasoning = reasoning
        self._tools = tools
        self._mode: Mode = "reasoning" if reasoning and starts_in_reasoning else "content"
        self._buf = ""  # text not yet classified (a possible partial tag)
        self._held_ws = ""  # trailing whitespace of the current mode, not yet emitted
        self._strip = self._mode == "reasoning"  # drop leading whitespace of the mode
        self._call_body: list[str] = []
        self._ws_before_call = ""
        self._calls: list[ToolCall] = []
        self._out: list[Delta] = []

    # --- public --------------------------------------------------------------------

    def feed(self, text: str) -> list[Delta]:
        self._buf += text
        self._drain(final=False)
        return self._take()

    def finish(self) -> tuple[list[Delta], list[ToolCall]]:
        self._drain(final=True)
        if self._mode == "tool":
            self._close_call(unterminated=True)
        elif self._mode == "content" and not self._calls:
            self._emit_raw("content", self._held_ws)
        self._held_ws = ""
        return self._take(), list(self._calls)

    # --- scanning ------------------------------------------------------------------

    def _tags(self) -> tuple[str, ...]:
        if self._mode == "reasoning":
            return (THINK_CLOSE,)
        if self._mode == "tool":
            return (TOOL_CLOSE,)
        tags: tuple[str, ...] = ()
        if self._reasoning:
            tags += (THINK_OPEN, THINK_CLOSE)
        if self._tools:
            tags += (TOOL_OPEN,)
        return tags

    def _drain(self, *, final: bool) -> None:
        while self._buf:
            tags = self._tags()
            hits = [(i, tag) for tag in tags if (i := self._buf.find(tag)) >= 0]
            if hits:
                index, tag = min(hits)
                self._text(self._buf[:index])
                self._buf = self._buf[index + len(tag) :]
                self._switch(tag)
                continue
            keep = 0 if final else _partial_tag_suffix(self._buf, tags)
            split = len(self._buf) - keep
            self._text(self._buf[:split])
            self._buf = self._buf[split:]
            return

    def _switch(self, tag: str) -> None:
        if tag == THINK_OPEN:
            self._enter("reasoning")
        elif tag == THINK_CLOSE:
            self._enter("content")  # also a stray close in content: dropped
        elif tag == TOOL_OPEN:
            self._ws_before_call = self._held_ws
            self._enter("tool")
            self._call_body = []
        else:
            self._close_call(unterminated=False)

    def _enter(self, mode: Mode) -> None:
        self._mode = mode
        self._held_ws = ""
        self._strip = True

    # --- output --------------------------------------------------------------------

    def _text(self, text: str) -> None:
        if not text:
            return
        if self._mode == "tool":
            self._call_body.append(text)
            return
        if self._strip:
            text = text.lstrip()
            if not text:
                return
            self._strip = False
        if not self._holds_whitespace():
            self._emit_raw(self._mode, text)
            return
        body = text.rstrip()
        tail = text[len(body) :]
        if body:
            self._emit_raw(self._mode, self._held_ws + body)
            self._held_ws = tail
        else:
            self._held_ws += tail

    def _holds_whitespace(self) -> bool:
        return self._mode == "reasoning" or self._tools

    def _emit_raw(self, kind: Mode, text: str) -> None:
        if not text or kind == "tool":
            return
        if self._out and self._out[-1].kind == kind:
            self._out[-1] = Delta(kind, self._out[-1].text + text)
        else:
            self._out.append(Delta(kind, text))

    def _close_call(self, *, unterminated: bool) -> None:
        body = "".join(self._call_body)
        call = parse_tool_call(body.strip())
        self._mode = "content"
        self._call_body = []
        if call is not None:
            self._calls.append(call)
            self._held_ws = ""
            self._strip = True
            return
        raw = TOOL_OPEN + body + ("" if unterminated else TOOL_CLOSE)
        self._emit_raw("content", self._ws_before_call + raw)
        self._held_ws = ""
        self._strip = False

    def _take(self) -> list[Delta]:
        out, self._out = self._out, []
        return out

    @property
    def tool_calls(self) -> list[ToolCall]:
        """Tool calls completed so far (``finish()`` returns the final list)."""
        return list(self._calls)


__all__ = ["Delta", "OutputParser", "ToolCall", "parse_tool_call"]
