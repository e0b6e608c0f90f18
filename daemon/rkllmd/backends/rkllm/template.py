"""Render an OpenAI conversation into the model's chat format, as one text.

The runtime's own template only wraps one user turn at a time, so it cannot
honour a whole history (assistant turns, system prompts, tool results). The
backend therefore switches the runtime to pass-through (``rkllm_set_chat_template
(h, "", "", "")``) and renders the conversation here. The format comes from, in
order: the load option ``chat_template`` (a family name or a Jinja template), a
sidecar next to the model (``<stem>.jinja``, or ``chat_template`` in
``tokenizer_config.json``), the model family guessed from the file name, and
ChatML as the fallback. No BOS text is written: the runtime's tokenizer adds it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import GenerationFailed, LoadFailed
from ...requests import ChatMessage

Renderer = Callable[[Sequence[ChatMessage], Sequence[dict[str, Any]], bool | None], str]

TOOLS_INTRO = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_OUTRO = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)


def _split_system(messages: Sequence[ChatMessage]) -> tuple[str | None, list[ChatMessage]]:
    if messages and messages[0].role == "system":
        return messages[0].content, list(messages[1:])
    return None, list(messages)


def _strip_reasoning(content: str) -> str:
    return content.split("</think>")[-1].lstrip("\n")


def _call_text(call: dict[str, Any]) -> str:
    function = call.get("function", call)
    args = function.get("arguments", {})
    args_text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
    name = json.dumps(str(function.get("name", "")), ensure_ascii=False)
    return f'<tool_call>\n{{"name": {name}, "arguments": {args_text}}}\n</tool_call>'


def _tools_text(tools: Sequence[dict[str, Any]]) -> str:
    listed = "".join("\n" + json.dumps(t, ensure_ascii=False) for t in tools)
    return TOOLS_INTRO + listed + TOOLS_OUTRO


# --- families ----------------------------------------------------------------------


def _chatml(qwen3: bool) -> Renderer:
    def render(
        messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]], thinking: bool | None
    ) -> str:
        system, rest = _split_system(messages)
        out: list[str] = []
        if tools:
            head = f"{system}\n\n" if system else ""
            out.append(f"<|im_start|>system\n{head}{_tools_text(tools)}<|im_end|>\n")
        elif system is not None:
            out.append(f"<|im_start|>system\n{system}<|im_end|>\n")
        for i, m in enumerate(rest):
            if m.role == "assistant":
                out.append(_chatml_assistant(m, qwen3))
            elif m.role == "tool":
                first = i == 0 or rest[i - 1].role != "tool"
                last = i == len(rest) - 1 or rest[i + 1].role != "tool"
                out.append(
                    ("<|im_start|>user" if first else "")
                    + f"\n<tool_response>\n{m.content}\n</tool_response>"
                    + ("<|im_end|>\n" if last else "")
                )
            else:
                out.append(f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n")
        out.append("<|im_start|>assistant\n")
        if qwen3 and thinking is False:
            out.append("<think>\n\n</think>\n\n")
        return "".join(out)

    return render


def _chatml_assistant(m: ChatMessage, qwen3: bool) -> str:
    content = _strip_reasoning(m.content) if qwen3 else m.content
    text = "<|im_start|>assistant" + (f"\n{content}" if content else "")
    for call in m.tool_calls:
        text += "\n" + _call_text(call)
    return text + "<|im_end|>\n"


def _simple(
    system_fmt: str, turn_fmt: dict[str, str], generation: str, merge_system: bool = False
) -> Renderer:
    """Formats with one wrapper per role: ``{c}`` is the content."""

    def render(
        messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]], thinking: bool | None
    ) -> str:
        system, rest = _split_system(messages)
        if tools:
            system = (f"{system}\n\n" if system else "") + _tools_text(tools)
        out: list[str] = []
        if system is not None and not merge_system:
            out.append(system_fmt.format(c=system))
        for i, m in enumerate(rest):
            content = m.content
            if m.role == "assistant":
                content = "\n".join([_strip_reasoning(content), *map(_call_text, m.tool_calls)])
                content = content.strip("\n") if m.tool_calls else content
            if merge_system and system is not None and i == 0 and m.role == "user":
                content = f"{system}\n\n{content}"
            out.append(turn_fmt.get(m.role, turn_fmt["user"]).format(c=content))
        out.append(generation)
        return "".join(out)

    return render


# DeepSeek's markers use FULLWIDTH VERTICAL LINE (U+FF5C) and U+2581.
_DS_USER = "<\uff5cUser\uff5c>"
_DS_ASSISTANT = "<\uff5cAssistant\uff5c>"
_DS_END = "<\uff5cend\u2581of\u2581sentence\uff5c>"

FAMILIES: dict[str, Renderer] = {
    "chatml": _chatml(qwen3=False),
    "qwen3": _chatml(qwen3=True),
    "llama3": _simple(
        "<|start_header_id|>system<|end_header_id|>\n\n{c}<|eot_id|>",
        {
            "user": "<|start_header_id|>user<|end_header_id|>\n\n{c}<|eot_id|>",
            "assistant": "<|start_header_id|>assistant<|end_header_id|>\n\n{c}<|eot_id|>",
            "tool": "<|start_header_id|>ipython<|end_header_id|>\n\n{c}<|eot_id|>",
        },
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    "gemma": _simple(
        "",
        {
            "user": "<start_of_turn>user\n{c}<end_of_turn>\n",
            "assistant": "<start_of_turn>model\n{c}<end_of_turn>\n",
        },
        "<start_of_turn>model\n",
        merge_system=True,
    ),
    "phi3": _simple(
        "<|system|>\n{c}<|end|>\n",
        {"user": "<|user|>\n{c}<|end|>\n", "assistant": "<|assistant|>\n{c}<|end|>\n"},
        "<|assistant|>\n",
    ),
    "zephyr": _simple(
        "<|system|>\n{c}</s>\n",
        {"user": "<|user|>\n{c}</s>\n", "assistant": "<|assistant|>\n{c}</s>\n"},
        "<|assistant|>\n",
    ),
    "deepseek-r1": _simple(
        "{c}",
        {"user": _DS_USER + "{c}", "assistant": _DS_ASSISTANT + "{c}" + _DS_END},
        _DS_ASSISTANT + "<think>\n",
    ),
}

# File-name hints, most specific first.
_HINTS = (
    (("deepseek-r1", "r1-distill", "deepseek_r1"), "deepseek-r1"),
    (("qwen3",), "qwen3"),
    (("qwen", "internlm", "minicpm", "smollm", "marco-o1"), "chatml"),
    (("llama-3", "llama3", "llama_3"), "llama3"),
    (("gemma",), "gemma"),
    (("phi-3", "phi3", "phi_3"), "phi3"),
    (("tinyllama",), "zephyr"),
)


def family_for(name: str) -> str | None:
    lowered = name.lower()
    for hints, family in _HINTS:
        if any(h in lowered for h in hints):
            return family
    return None


# --- Jinja (Hugging Face chat_template semantics) ----------------------------------


def _jinja_renderer(source: str) -> Renderer:
    try:
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise LoadFailed("a Jinja chat template needs the jinja2 package") from None

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.filters["tojson"] = lambda v, indent=None: json.dumps(v, ensure_ascii=False, indent=indent)
    try:
        template = env.from_string(source)
    except TemplateError as exc:
        raise LoadFailed(f"the chat template does not compile: {exc}") from None

    def render(
        messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]], thinking: bool | None
    ) -> str:
        extra = {} if thinking is None else {"enable_thinking": thinking}
        try:
            return template.render(
                messages=[m.to_template() for m in messages],
                tools=list(tools) or None,
                add_generation_prompt=True,
                bos_token="",
                eos_token="",
                **extra,
            )
        except TemplateError as exc:
            raise GenerationFailed(f"the chat template rejected the conversation: {exc}") from None

    return render


# --- choosing ------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatFormat:
    render: Renderer
    source: str  # "override" | "sidecar" | "family" | "fallback"
    family: str | None  # built-in family name, None for a Jinja template
    text: str | None  # the Jinja source when there is one

    def opens_reasoning(self) -> bool:
        """Whether the generation prompt leaves a ``<think>`` block open."""
        probe = self.render((ChatMessage("user", "x"),), (), None).rstrip()
        return probe.endswith("<think>")


def _sidecar(model: Path) -> str | None:
    jinja = model.with_suffix(".jinja")
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = model.parent / "tokenizer_config.json"
    if config.is_file():
        try:
            value = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        except (ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None
    return None


def choose_format(model: Path, override: str | None) -> ChatFormat:
    if override:
        if override in FAMILIES:
            return ChatFormat(FAMILIES[override], "override", override, None)
        return ChatFormat(_jinja_renderer(override), "override", None, override)
    sidecar = _sidecar(model)
    if sidecar:
        return ChatFormat(_jinja_renderer(sidecar), "sidecar", None, sidecar)
    family = family_for(model.stem)
    if family:
        return ChatFormat(FAMILIES[family], "family", family, None)
    return ChatFormat(FAMILIES["chatml"], "fallback", "chatml", None)
