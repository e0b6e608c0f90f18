"""Model management commands: status, ls, show, load, unload, rescan, pull, rm."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .context import Context, ExitCode, UsageError
from .render import (
    format_duration,
    format_size,
    format_time,
    format_value,
    key_values,
    table,
)


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    status = ctx.call("status")
    if ctx.json:
        ctx.emit_json(status)
    else:
        ctx.lines(key_values(status_pairs(_as_dict(status))))
    return ExitCode.OK


def status_pairs(status: dict[str, Any]) -> list[tuple[str, str]]:
    queue = _as_dict(status.get("queue"))
    pairs = [
        ("state", format_value(status.get("state"))),
        ("model", format_value(status.get("model"))),
        ("format", format_value(status.get("format"))),
        ("worker pid", format_value(status.get("worker_pid"))),
        ("queue", f"{format_value(queue.get('waiting'))}/{format_value(queue.get('max'))}"),
    ]
    options = _as_dict(status.get("options"))
    if status.get("model") and status.get("format"):  # a resident model: how it was loaded
        shown = ", ".join(f"{k}={format_value(v)}" for k, v in options.items())
        pairs.append(("options", shown or "defaults"))
        if status.get("pinned"):
            pairs.append(("pinned", "yes"))
    if status.get("loaded_at"):
        pairs.append(("loaded at", format_time(status["loaded_at"])))
    embedding = _as_dict(status.get("embedding"))
    if embedding:
        pid = format_value(embedding.get("worker_pid"))
        pairs.append(("embedding", f"{format_value(embedding.get('model'))} (worker pid {pid})"))
    pairs.append(("uptime", format_duration(status.get("uptime_s"))))
    if status.get("version"):
        pairs.append(("version", str(status["version"])))
    if status.get("state") == "failed" or status.get("reason"):
        pairs.append(("reason", format_value(status.get("reason"))))
    failure = _as_dict(status.get("load_failure"))
    if failure:
        restored = failure.get("restored")
        after = f"; {restored} was loaded again" if restored else ""
        pairs.append(("load failed", f"{failure.get('model')}: {failure.get('reason')}{after}"))
    return pairs


def cmd_ls(ctx: Context, args: argparse.Namespace) -> int:
    listing = _as_dict(ctx.call("list"))
    models = listing.get("models") or []
    pulls = [_as_dict(p) for p in listing.get("pulls") or []]
    if ctx.json:
        ctx.emit_json([*models, *(pull_row(p) for p in pulls)])
        return ExitCode.OK
    if not models:
        ctx.out("no models in the models directory")
    else:
        ctx.lines(models_table([_as_dict(m) for m in models]))
    for pull in pulls:  # running or interrupted pulls
        done = f"{format_size(pull.get('bytes'))} of {format_size(pull.get('total'))}"
        ctx.err(f"pull of {pull.get('repo')}: {pull.get('state') or pull.get('stage')}, {done}")
    return ExitCode.OK


def pull_row(pull: dict[str, Any]) -> dict[str, Any]:
    """A running or resumable pull as a row of ``ls --json``: the fields every row has
    (``id`` is the repository, nothing is loadable yet) and the pull itself."""
    return {
        "id": pull.get("repo"),
        "format": None,
        "size_bytes": pull.get("bytes"),
        "loaded": False,
        "pull": pull,
    }


def models_table(models: list[dict[str, Any]]) -> list[str]:
    rows = [
        [
            str(model.get("id", "?")),
            format_value(model.get("format")),
            format_size(model.get("size_bytes")),
            format_time(model.get("modified")),
            "*" if model.get("loaded") else "",
        ]
        for model in models
    ]
    return table(["ID", "FORMAT", "SIZE", "MODIFIED", "LOADED"], rows)


def cmd_show(ctx: Context, args: argparse.Namespace) -> int:
    model = _as_dict(ctx.call("show", {"model": args.model}))
    if ctx.json:
        ctx.emit_json(model)
    else:
        ctx.lines(show_lines(model))
    return ExitCode.OK


def show_lines(model: dict[str, Any]) -> list[str]:
    pairs = [
        ("id", format_value(model.get("id"))),
        ("file", format_value(model.get("file"))),
        ("format", format_value(model.get("format"))),
        ("size", format_size(model.get("size_bytes"))),
        ("modified", format_time(model.get("modified"))),
        ("loaded", format_value(model.get("loaded"))),
    ]
    known = {"id", "file", "format", "size_bytes", "modified", "loaded", "props"}
    pairs += [(key, format_value(value)) for key, value in model.items() if key not in known]
    lines = key_values(pairs)
    props = _as_dict(model.get("props"))
    if props:
        lines.append("props:")
        lines += key_values(((k, format_value(v)) for k, v in props.items()), indent="  ")
    return lines


def cmd_load(ctx: Context, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"model": args.model}
    if args.ctx_size is not None:
        params["ctx_size"] = args.ctx_size
    if args.threads is not None:
        params["threads"] = args.threads
    if args.chat_template is not None:
        params["chat_template"] = read_text_file(args.chat_template, "chat template")
    if args.template is not None:
        params["chat_template"] = args.template  # the daemon looks the name up
    if args.embedding:
        params["embedding"] = True
    for name in ("parallel", "draft_model", "lookup_ngram"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    status = _as_dict(ctx.call_with_progress("load", params))
    if ctx.json:
        ctx.emit_json(status)
    elif args.embedding:
        embedding = _as_dict(status.get("embedding"))
        ctx.out(f"loaded {format_value(embedding.get('model'))} as the embedding model")
    else:
        ctx.out(
            f"loaded {format_value(status.get('model'))} ({format_value(status.get('format'))})"
        )
    return ExitCode.OK


def read_text_file(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UsageError(f"cannot read {what} {path}: {reason}") from None


def cmd_unload(ctx: Context, args: argparse.Namespace) -> int:
    status = _as_dict(ctx.call("unload", {"embedding": True} if args.embedding else None))
    if ctx.json:
        ctx.emit_json(status)
    elif "unloaded" in status and not status["unloaded"]:
        ctx.out("no embedding model was loaded" if args.embedding else "no model was loaded")
    else:
        what = "the embedding model " if args.embedding else ""
        ctx.out(f"unloaded {what}{status['unloaded']}" if status.get("unloaded") else "unloaded")
    return ExitCode.OK


def cmd_rescan(ctx: Context, args: argparse.Namespace) -> int:
    result = ctx.call("rescan")
    if ctx.json:
        ctx.emit_json(result)
    else:
        count = _as_dict(result).get("models")
        ctx.out(f"rescanned: {format_value(count)} models")
    return ExitCode.OK


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
