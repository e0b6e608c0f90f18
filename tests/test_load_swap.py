"""A model file swapped between the scan that listed it and the load.

A member of the models dir's group renames a symlink to a file outside, or a FIFO,
over ``<models>/a.gguf`` right before ``load a``: the worker must refuse it (it opens
the file below the models root without following links, and never blocks on a FIFO),
never serve the outside file, and the daemon must answer at once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DaemonProcess, RpcError

GGUF = b"GGUF\x03\x00\x00\x00" + b"\0" * 256


def listed(models_dir: Path, name: str) -> Path:
    path = models_dir / name
    path.write_bytes(GGUF)
    past = time.time() - 3600
    os.utime(path, (past, past))
    return path


def swap_in(target: Path, make: Any) -> None:
    """Build the replacement beside ``target`` and rename it over, atomically."""
    staged = target.with_name(".swap")
    make(staged)
    staged.rename(target)


@pytest.mark.parametrize("kind", ["symlink-outside", "fifo"])
def test_a_model_swapped_before_its_load_is_refused(
    start_daemon: Any, models_dir: Path, kind: str
) -> None:
    outside = models_dir.parent / "outside.gguf"
    outside.write_bytes(GGUF)
    target = listed(models_dir, "a.gguf")
    daemon: DaemonProcess = start_daemon(
        models_dir, env={"RKLLMD_WORKER__LOAD_TIMEOUT_SECONDS": "600"}
    )
    assert [m["id"] for m in daemon.call("list")["models"]] == ["a"]
    if kind == "fifo":
        swap_in(target, os.mkfifo)
    else:
        swap_in(target, lambda p: p.symlink_to(outside))
    client = daemon.client(timeout=30)  # a deadline: a FIFO once held the load for 600 s
    with pytest.raises(RpcError) as err:
        client.call("load", model="a")
    # load_failed from the worker; the watcher's rescan may win and refuse the name.
    assert err.value.data["code"] in ("load_failed", "invalid_model_name", "model_not_found")
    status = daemon.call("status")
    assert status["state"] != "ready" and status["model"] in (None, "a")
