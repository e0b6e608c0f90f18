"""``pull`` and ``rm``: download progress per file and overall, file choice, removal."""

from __future__ import annotations

import argparse
from typing import Any

from .client import RpcFailure
from .context import Context, ExitCode, UsageError, report_error
from .render import ProgressView, format_duration, format_size, is_tty, progress_bar

BAR_WIDTH = 20
NAME_WIDTH = 20
_STAGES = {
    "resolving": "resolving",
    "verifying": "checking files in place",
    "downloading": "downloading",
    "publishing": "publishing",
}


def _interactive(ctx: Context) -> bool:
    return not ctx.json and is_tty(ctx.stdin) and is_tty(ctx.stderr)


# --- pull --------------------------------------------------------------------------


def cmd_pull(ctx: Context, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"repo": args.repo}
    if args.file is not None:
        params["file"] = args.file
    if args.include:
        params["include"] = list(args.include)
    if getattr(args, "exclude", None):
        params["exclude"] = list(args.exclude)
    if args.revision is not None:
        params["revision"] = args.revision
    while True:
        try:
            result = ctx.call_with_progress("pull", params, PullView)
            break
        except RpcFailure as exc:
            if exc.code != "choose_file" or ctx.json:
                raise
            choice = _choose(ctx, exc)
            if choice is None:
                return ExitCode.DAEMON_ERROR
            params["file"] = choice
    if ctx.json:
        ctx.emit_json(result)
    else:
        ctx.out(pull_summary(result if isinstance(result, dict) else {}))
    return ExitCode.OK


def _choose(ctx: Context, exc: RpcFailure) -> str | None:
    """Ask which model file (on a terminal); otherwise list them and give up."""
    candidates = [c for c in exc.data.get("candidates") or [] if isinstance(c, dict)]
    ctx.err(exc.message)
    for number, item in enumerate(candidates, 1):
        ctx.stderr.write(
            f"  {number:>2}. {item.get('file')}  {format_size(item.get('size_bytes'))}\n"
        )
    if not candidates or not _interactive(ctx):
        ctx.err("pass the file to pull: rkllmctl pull REPO FILE (or --include GLOB)")
        return None
    ctx.stderr.write(f"which one? [1-{len(candidates)}] ")
    ctx.stderr.flush()
    answer = ctx.stdin.readline().strip()
    if answer.isdigit() and 1 <= int(answer) <= len(candidates):
        return str(candidates[int(answer) - 1].get("file"))
    ctx.err("no file chosen")
    return None


def pull_summary(result: dict[str, Any]) -> str:
    ident = result.get("id") or result.get("repo") or ""
    details = []
    if result.get("repo") and result.get("commit"):
        details.append(f"{result['repo']}@{str(result['commit'])[:10]}")
    files = [f for f in result.get("files") or [] if isinstance(f, dict)]
    if files:
        present = sum(1 for f in files if f.get("status") == "present")
        count = f"{len(files)} file" + ("" if len(files) == 1 else "s")
        details.append(count + (f", {present} already present" if present else ""))
    if "downloaded_bytes" in result:
        took = result.get("elapsed_s")
        details.append(f"{format_size(result['downloaded_bytes'])} downloaded in {took} s")
    models = result.get("models") or []
    if len(models) > 1:
        details.append("models: " + ", ".join(str(m) for m in models))
    return f"pulled {ident}" + (f" ({'; '.join(details)})" if details else "")


class PullView(ProgressView):
    """Two bars on a terminal (current file, overall); a line per stage and per file otherwise."""

    def lines(self, event: dict[str, Any]) -> list[str]:
        return render_event(event)

    def plain(self, event: dict[str, Any]) -> tuple[object, str]:
        step = (event.get("stage"), event.get("file"))
        return step, plain_line(event, render_event(event)[0])


def _bar(done: Any, total: Any) -> str:
    if not isinstance(done, int) or not isinstance(total, int) or total <= 0:
        return " " * (BAR_WIDTH + 7)
    return progress_bar(min(max(done / total, 0.0), 1.0), BAR_WIDTH)


def plain_line(event: dict[str, Any], fallback: str) -> str:
    if event.get("stage") != "downloading" or not event.get("file"):
        return fallback
    index, count = event.get("file_index"), event.get("files_total")
    return f"downloading {event['file']} ({index}/{count}, {format_size(event.get('file_total'))})"


def render_event(event: dict[str, Any]) -> list[str]:
    """The lines for one progress event: file bar (if any) and overall bar."""
    stage = str(event.get("stage") or "")
    if stage != "downloading":
        label = _STAGES.get(stage, stage)
        message = str(event.get("message") or "")
        if stage == "verifying" and isinstance(event.get("bytes"), int) and event["bytes"]:
            message += f" ({format_size(event['bytes'])} hashed)"
        return [f"{label}: {message}" if message else label]
    lines = []
    if event.get("file"):
        index, count = event.get("file_index"), event.get("files_total")
        name = str(event["file"])
        name = name if len(name) <= NAME_WIDTH else "…" + name[1 - NAME_WIDTH :]
        sizes = f"{format_size(event.get('file_bytes'))}/{format_size(event.get('file_total'))}"
        lines.append(
            f"{name:<{NAME_WIDTH}} {_bar(event.get('file_bytes'), event.get('file_total'))}  "
            f"{sizes}  ({index}/{count})"
        )
    rate, eta = event.get("rate"), event.get("eta_s")
    speed = f"  {format_size(rate)}/s" if isinstance(rate, int | float) and rate > 0 else ""
    left = f"  ETA {format_duration(eta)}" if isinstance(eta, int | float) else ""
    total = f"{format_size(event.get('bytes'))}/{format_size(event.get('total'))}"
    overall = _bar(event.get("bytes"), event.get("total"))
    lines.append(f"{'total':<{NAME_WIDTH}} {overall}  {total}{speed}{left}")
    return lines


# --- rm ----------------------------------------------------------------------------


def cmd_rm(ctx: Context, args: argparse.Namespace) -> int:
    remove_all = bool(getattr(args, "all", False))
    if remove_all == (args.model is not None):
        raise UsageError("give a MODEL to remove, or --all")
    params: dict[str, Any] = {"all": True} if remove_all else {"model": args.model}
    if args.force:
        params["force"] = True
    if remove_all and not getattr(args, "yes", False) and not _confirm_all(ctx):
        return ExitCode.USAGE if not _interactive(ctx) else ExitCode.DAEMON_ERROR
    try:
        result = ctx.call("remove", params)
    except RpcFailure as exc:
        if exc.code != "model_in_use" or args.force or not exc.data.get("model"):
            raise
        report_error(ctx, exc)
        ctx.err("use --force to unload it and remove it")
        return ExitCode.DAEMON_ERROR
    data = result if isinstance(result, dict) else {}
    if ctx.json:
        ctx.emit_json(result)
    elif remove_all:
        ctx.out(f"removed {len(data.get('removed') or [])} models")
    else:
        ctx.out(f"removed {data.get('id') or args.model}")
    return ExitCode.OK


def _confirm_all(ctx: Context) -> bool:
    if not _interactive(ctx):
        ctx.err("rm --all removes every model; pass --yes to confirm when not on a terminal")
        return False
    listing = ctx.call("list")
    models = listing.get("models") if isinstance(listing, dict) else None
    count = len(models) if isinstance(models, list) else 0
    ctx.stderr.write(f"remove all {count} models and all partial downloads? [y/N] ")
    ctx.stderr.flush()
    if ctx.stdin.readline().strip().lower() in ("y", "yes"):
        return True
    ctx.err("nothing removed")
    return False
