"""What every command gets: streams, environment, output mode and a way to connect."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from typing import Any, NamedTuple, TextIO

from .client import ClientError, NotificationHandler, RpcFailure, call
from .render import ProgressView

PROG = "rkllmctl"


class ExitCode(enum.IntEnum):
    OK = 0
    DAEMON_ERROR = 1
    USAGE = 2
    UNREACHABLE = 3
    INTERRUPTED = 130


class UsageError(Exception):
    """A mistake in what the user asked for (exit code 2)."""


class Context(NamedTuple):
    """Immutable per-invocation settings (a NamedTuple: cheaper to import than dataclasses)."""

    stdin: TextIO
    stdout: TextIO
    stderr: TextIO
    env: Mapping[str, str]
    socket_path: str
    json: bool
    timeout: float | None

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        on_notification: NotificationHandler | None = None,
    ) -> Any:
        """One request on a fresh connection, with the command's timeout."""
        return call(
            self.socket_path,
            method,
            params,
            timeout=self.timeout,
            on_notification=on_notification,
        )

    def call_with_progress(
        self, method: str, params: dict[str, Any], view: type[ProgressView] = ProgressView
    ) -> Any:
        """A long call; in human mode its ``progress`` notifications draw on stderr."""
        if self.json:
            return self.call(method, params)
        shown = view(self.stderr)
        try:
            return self.call(
                method, {**params, "progress": True}, on_notification=shown.on_notification
            )
        finally:
            shown.finish()

    def out(self, text: str = "") -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def lines(self, lines: list[str]) -> None:
        if lines:
            self.out("\n".join(lines))

    def err(self, text: str) -> None:
        self.stderr.write(f"{PROG}: {text}\n")
        self.stderr.flush()

    def emit_json(self, value: Any) -> None:
        self.out(json.dumps(value, indent=2, ensure_ascii=False))


def failure_details(exc: RpcFailure) -> list[str]:
    """Extra lines for errors whose data says what the user could do instead
    (unless the daemon's message already lists them)."""
    data = exc.data
    said = exc.message.lower()
    if exc.code == "model_not_found" and "available" not in said:
        available = [str(item) for item in data.get("available") or []]
        if available:
            return ["available models: " + ", ".join(available)]
        return ["no models available (see 'rkllmctl ls' and 'rkllmctl rescan')"]
    if exc.code == "ambiguous_model" and "candidates" not in said:
        candidates = [str(item) for item in data.get("candidates") or []]
        return ["candidates: " + ", ".join(candidates)] if candidates else []
    if exc.code == "queue_full" and data.get("retry_after") is not None:
        return [f"retry after {data['retry_after']} s"]
    return []


def report_error(ctx: Context, exc: ClientError) -> None:
    """One clear line on stderr (plus hints); with ``--json`` the error object on stdout."""
    ctx.err(exc.message)
    if isinstance(exc, RpcFailure):
        for line in failure_details(exc):
            ctx.err(line)
    if ctx.json:
        ctx.emit_json({"error": error_object(exc)})


def error_object(exc: ClientError) -> dict[str, Any]:
    if isinstance(exc, RpcFailure):
        body: dict[str, Any] = {
            "code": exc.code,
            "message": exc.message,
            "rpc_code": exc.rpc_code,
        }
        if exc.data:
            body["data"] = exc.data
        return body
    return {"code": getattr(exc, "code", "error"), "message": exc.message, "rpc_code": None}
