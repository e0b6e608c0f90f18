"""Metadata files that are hostile: nested beyond any parser, FIFOs, links to outside.

A real daemon on a models dir holding them: it must start, list what it can, answer
``rescan``, show nothing read from outside, and stop on SIGTERM.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from tests.helpers import DaemonProcess

NESTED = b"[" * 50_000 + b"]" * 50_000


def model(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\0" * 64)
    past = time.time() - 3600
    os.utime(path, (past, past))


def ids(daemon: DaemonProcess) -> list[str]:
    return sorted(m["id"] for m in daemon.call("list")["models"])


def test_nested_metadata_neither_stops_the_start_nor_the_rescans(
    start_daemon: Any, models_dir: Path
) -> None:
    model(models_dir / "m.gguf")
    (models_dir / "m.rkllmd.json").write_bytes(NESTED)
    daemon: DaemonProcess = start_daemon(models_dir)
    assert ids(daemon) == ["m"]
    model(models_dir / "org" / "r" / "x.gguf")
    (models_dir / "org" / "r" / "config.json").write_bytes(NESTED)
    (models_dir / "org" / "r" / "meta.json").write_bytes(b'{"a":' * 2000 + b"1" + b"}" * 2000)
    daemon.call("rescan")
    assert ids(daemon) == ["m", "x"]
    assert "ignoring metadata file 'm.rkllmd.json': nested deeper than 64 levels" in daemon.log()
    assert daemon.stop() == 0


def test_fifos_named_like_metadata_never_block_a_scan(start_daemon: Any, models_dir: Path) -> None:
    model(models_dir / "m.gguf")
    os.mkfifo(models_dir / "m.rkllmd.json")
    model(models_dir / "org" / "a" / "x.gguf")
    os.mkfifo(models_dir / "org" / "a" / "config.json")
    model(models_dir / "org" / "b" / "y.gguf")
    os.mkfifo(models_dir / "org" / "b" / ".rkllmd-pull.json")
    daemon: DaemonProcess = start_daemon(models_dir)  # READY=1 within the harness deadline
    # y sits under a manifest that cannot be read: hidden, as a publish cut short is.
    assert ids(daemon) == ["m", "x"]
    daemon.call("rescan")
    assert "ignoring metadata file 'm.rkllmd.json': not a regular file" in daemon.log()
    assert daemon.stop() == 0


def test_metadata_links_to_outside_are_not_followed(start_daemon: Any, models_dir: Path) -> None:
    outside = models_dir.parent / "secret.json"
    outside.write_text(json.dumps({"name": "LEAKED", "description": "LEAKED"}))
    model(models_dir / "m.gguf")
    (models_dir / "m.rkllmd.json").symlink_to(outside)
    model(models_dir / "org" / "r" / "x.gguf")
    (models_dir / "org" / "r" / "meta.json").symlink_to(outside)
    daemon: DaemonProcess = start_daemon(models_dir)
    shown = json.dumps([daemon.call("show", model=name) for name in ("m", "x")])
    assert "LEAKED" not in shown and "LEAKED" not in json.dumps(daemon.call("list"))
    assert "ignoring metadata file 'm.rkllmd.json': it is a symbolic link" in daemon.log()
