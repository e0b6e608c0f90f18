"""``rkllmctl doctor``: local checks that need no daemon, plus whether it answers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .boardcheck import Check, board_checks
from .client import ClientError, RpcFailure
from .context import Context, ExitCode
from .paths import choose_socket

DEVICE_TREE = "/proc/device-tree/compatible"
SUPPORTED_SOCS = ("rockchip,rk3588", "rockchip,rk3576")
DOCTOR_TIMEOUT_S = 3.0


def check_python() -> Check:
    version = ".".join(str(part) for part in sys.version_info[:3])
    status = "ok" if sys.version_info >= (3, 11) else "fail"
    return Check("python", status, f"{version} ({sys.executable})")


def check_socket(ctx: Context, flag: str | None) -> Check:
    choice = choose_socket(flag, ctx.env)
    return Check("socket", "info", f"{choice.path} (from {choice.source})")


def check_daemon(ctx: Context) -> Check:
    timeout = min(ctx.timeout or DOCTOR_TIMEOUT_S, DOCTOR_TIMEOUT_S)
    probe = ctx._replace(timeout=timeout)
    try:
        status = probe.call("status")
    except RpcFailure as exc:
        return Check("daemon", "fail", f"answered with an error: {exc.message}")
    except ClientError as exc:
        return Check("daemon", "fail", exc.message)
    info = status if isinstance(status, dict) else {}
    detail = f"reachable, state {info.get('state')}, model {info.get('model') or '-'}"
    if info.get("version"):
        detail += f", version {info['version']}"
    runtime = info.get("runtime")
    if isinstance(runtime, dict) and runtime.get("version"):
        detail += f", RKLLM runtime {runtime['version']} (driver {runtime.get('driver_version')})"
    if info.get("state") == "failed" and info.get("reason"):
        return Check("daemon", "warn", f"{detail}: {info['reason']}", "rkllmctl load MODEL")
    return Check("daemon", "ok", detail)


def daemon_models(ctx: Context) -> list[dict[str, Any]]:
    """The daemon's model list for the memory check ([] when it does not answer)."""
    try:
        listing = ctx._replace(timeout=DOCTOR_TIMEOUT_S).call("list")
    except (ClientError, RpcFailure):
        return []
    models = listing.get("models") if isinstance(listing, dict) else None
    return [m for m in models or [] if isinstance(m, dict)]


def check_render_nodes(dev_dri: str = "/dev/dri") -> Check:
    nodes = sorted(str(p) for p in Path(dev_dri).glob("renderD*"))
    if nodes:
        return Check("render nodes", "ok", ", ".join(nodes))
    return Check("render nodes", "warn", f"no {dev_dri}/renderD* (no NPU/GPU DRM device)")


def check_device_tree(path: str = DEVICE_TREE) -> Check:
    try:
        raw = Path(path).read_bytes()
    except OSError:
        return Check(
            "board",
            "warn",
            f"{path} not present (not a device-tree system)",
            ".rkllm models need an RK3588/RK3576 NPU; .gguf models run on the CPU anywhere",
        )
    entries = [e.decode("ascii", "replace") for e in raw.split(b"\0") if e]
    text = ", ".join(entries) or "(empty)"
    if any(entry.startswith(SUPPORTED_SOCS) for entry in entries):
        return Check("board", "ok", text)
    return Check(
        "board",
        "warn",
        f"{text} (not an RK3588/RK3576)",
        ".rkllm models need an RK3588/RK3576 NPU; .gguf models run on the CPU anywhere",
    )


def run_checks(ctx: Context, flag: str | None) -> list[Check]:
    daemon = check_daemon(ctx)
    models = daemon_models(ctx) if daemon.status != "fail" else []
    return [
        check_python(),
        check_socket(ctx, flag),
        daemon,
        check_render_nodes(),
        check_device_tree(),
        *board_checks(ctx.env, models),
    ]


def cmd_doctor(ctx: Context, args: argparse.Namespace) -> int:
    checks = run_checks(ctx, args.socket)
    failed = any(check.status == "fail" for check in checks)
    if ctx.json:
        body: dict[str, Any] = {"ok": not failed, "checks": [c._asdict() for c in checks]}
        ctx.emit_json(body)
    else:
        width = max(len(check.name) for check in checks)
        for check in checks:
            ctx.out(f"{check.status:<4}  {check.name:<{width}}  {check.detail}")
            if check.fix and check.status in ("warn", "fail"):
                ctx.out(f"{'':<4}  {'':<{width}}  -> {check.fix}")
    return ExitCode.DAEMON_ERROR if failed else ExitCode.OK
