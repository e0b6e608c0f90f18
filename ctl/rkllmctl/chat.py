"""``rkllmctl run``: one prompt (streamed), a prompt from stdin, or a REPL."""

from __future__ import annotations

import argparse
import base64
import contextlib
import sys
from pathlib import Path
from typing import Any, TextIO

from .client import RpcFailure
from .context import Context, ExitCode, UsageError, report_error
from .render import is_tty

SAMPLING_FLAGS = ("max_tokens", "temperature", "top_p", "top_k", "seed")
REPL_PROMPT = ">>> "
# A line whose first word is "/" and letters is a command, never sent to the model
# ("/etc/hosts?" is a prompt).
REPL_COMMANDS = {
    "/help": "show these commands",
    "/clear": "forget the conversation (the system prompt stays)",
    "/system": "/system TEXT sets the system prompt; /system alone shows it",
    "/exit": "leave (also /bye, or Ctrl-D)",
}
REPL_EXITS = ("/exit", "/bye", "/quit")
# What fits one call on the control socket once in base64 (its lines are <= 16 MiB).
MAX_IMAGE_BYTES = 12 * 1024 * 1024


class TokenPrinter:
    """Writes ``token`` notifications to a stream as they arrive."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.count = 0

    def on_notification(self, method: str, params: dict[str, Any]) -> None:
        if method != "token":
            return
        text = params.get("text")
        if isinstance(text, str) and text:
            self._stream.write(text)
            self._stream.flush()
            self.count += 1


def chat_params(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling options the user set (unset ones are left to the daemon)."""
    params: dict[str, Any] = {}
    for name in SAMPLING_FLAGS:
        value = getattr(args, name)
        if value is not None:
            params[name] = value
    if args.stop:
        params["stop"] = list(args.stop)
    return params


def base_messages(args: argparse.Namespace) -> list[dict[str, str]]:
    return [{"role": "system", "content": args.system}] if args.system else []


def cmd_run(ctx: Context, args: argparse.Namespace) -> int:
    if args.prompt is not None:
        prompt: str = args.prompt
    elif is_tty(ctx.stdin):
        return repl(ctx, args)
    else:
        prompt = ctx.stdin.read().rstrip()
    if not prompt.strip():
        raise UsageError("empty prompt: give PROMPT or pipe text on stdin")
    messages = [*base_messages(args), user_message(prompt, image_parts(args))]
    chat_once(ctx, args, messages)
    return ExitCode.OK


def image_parts(args: argparse.Namespace) -> list[dict[str, str]]:
    """``--image`` files, read here (as the user, not the daemon) and sent inline."""
    parts = []
    for name in getattr(args, "image", None) or ():
        try:
            with Path(name).open("rb") as handle:
                data = handle.read(MAX_IMAGE_BYTES + 1)
        except OSError as exc:
            raise UsageError(f"cannot read image {name}: {exc.strerror}") from None
        if len(data) > MAX_IMAGE_BYTES:
            raise UsageError(f"image {name} is larger than {MAX_IMAGE_BYTES // 2**20} MiB")
        parts.append({"type": "image", "data": base64.b64encode(data).decode("ascii")})
    return parts


def user_message(text: str, images: list[dict[str, str]]) -> dict[str, Any]:
    if not images:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [*images, {"type": "text", "text": text}]}


def chat_once(
    ctx: Context, args: argparse.Namespace, messages: list[dict[str, Any]]
) -> dict[str, Any]:
    """Send one chat request; stream it to stdout unless ``--json``."""
    params: dict[str, Any] = {"model": args.model, "messages": messages, **chat_params(args)}
    params["stream"] = not ctx.json
    printer = TokenPrinter(ctx.stdout)
    try:
        result = ctx.call("chat", params, on_notification=printer.on_notification)
    except KeyboardInterrupt:
        if printer.count:
            ctx.stdout.write("\n")
            ctx.stdout.flush()
        raise
    reply = result if isinstance(result, dict) else {}
    if ctx.json:
        ctx.emit_json(reply)
        return reply
    if not printer.count:
        ctx.stdout.write(reply_text(reply))
    ctx.out()
    if not args.quiet:
        ctx.stderr.write(stats_line(reply) + "\n")
        ctx.stderr.flush()
    return reply


def reply_text(reply: dict[str, Any]) -> str:
    message = reply.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""


def stats_line(reply: dict[str, Any]) -> str:
    usage = _as_dict(reply.get("usage"))
    timings = _as_dict(reply.get("timings"))
    parts = [
        f"{usage.get('prompt_tokens', '?')} prompt tokens",
        f"{usage.get('completion_tokens', '?')} generated",
    ]
    speed = timings.get("tokens_per_s")
    if isinstance(speed, int | float):
        parts.append(f"{speed:.1f} tok/s")
    ttft = timings.get("ttft_ms")
    if isinstance(ttft, int | float):
        parts.append(f"first token {ttft:.0f} ms")
    if reply.get("finish_reason") == "length":
        parts.append("stopped at the token limit")
    return "[" + ", ".join(parts) + "]"


def repl(ctx: Context, args: argparse.Namespace) -> int:
    """Multi-turn chat until ``/exit`` or end of input."""
    history: list[dict[str, Any]] = list(base_messages(args))
    images = image_parts(args)  # they go with the first message
    if not args.quiet:
        say(ctx, f"Chatting with {args.model}. /help lists the commands; /exit or Ctrl-D leaves.")
    while True:
        line = read_line(ctx)
        if line is None:
            ctx.out()
            return ExitCode.OK
        text = line.strip()
        if not text:
            continue
        if is_command(text):
            if not run_command(ctx, text, history):
                return ExitCode.OK
            continue
        history.append(user_message(text, images))
        try:
            reply = chat_once(ctx, args, history)
        except RpcFailure as exc:
            report_error(ctx, exc)
            history.pop()
            continue
        images = []
        history.append({"role": "assistant", "content": reply_text(reply)})


def is_command(text: str) -> bool:
    word = text.split(maxsplit=1)[0]
    return len(word) > 1 and word[0] == "/" and word[1:].isalpha()


def run_command(ctx: Context, text: str, history: list[dict[str, Any]]) -> bool:
    """Carry out a REPL command; False means leave."""
    word, _, rest = text.partition(" ")
    word, rest = word.lower(), rest.strip()
    if word in REPL_EXITS:
        return False
    if word == "/help":
        for name, meaning in REPL_COMMANDS.items():
            say(ctx, f"  {name:<8} {meaning}")
    elif word == "/clear":
        history[:] = [m for m in history if m["role"] == "system"]
        say(ctx, "conversation cleared")
    elif word == "/system" and rest:
        history[:] = [{"role": "system", "content": rest}] + [
            m for m in history if m["role"] != "system"
        ]
        say(ctx, "system prompt set")
    elif word == "/system":
        system = next((m["content"] for m in history if m["role"] == "system"), None)
        say(ctx, f"system prompt: {system}" if system else "no system prompt")
    else:
        say(ctx, f"unknown command {word}; /help lists the commands")
    return True


def say(ctx: Context, text: str) -> None:
    """REPL messages for the person at the terminal: on stderr, apart from the replies."""
    ctx.stderr.write(text + "\n")
    ctx.stderr.flush()


def read_line(ctx: Context) -> str | None:
    """The next REPL input line, or ``None`` at end of input."""
    if ctx.stdin is sys.stdin and ctx.stdout is sys.stdout:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing for input())
        try:
            return input(REPL_PROMPT)
        except EOFError:
            return None
    ctx.stdout.write(REPL_PROMPT)
    ctx.stdout.flush()
    line = ctx.stdin.readline()
    return line or None


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
