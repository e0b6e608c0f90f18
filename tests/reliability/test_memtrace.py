"""The soak's memory probe: tracemalloc snapshots of a real daemon on SIGUSR1."""

from __future__ import annotations

import os
import shutil
import signal
import tracemalloc
from pathlib import Path

from tests.backends.conftest import NpuDaemon
from tests.helpers import short_tempdir, wait_for


def test_sigusr1_dumps_numbered_snapshots(npu_daemon: NpuDaemon) -> None:
    dumps = short_tempdir()
    try:
        daemon = npu_daemon(env={"_RKLLMD_TRACEMALLOC": str(dumps)})
        chat = daemon.call("chat", messages=[{"role": "user", "content": "[[repeat:5]]"}])
        assert chat["usage"]["completion_tokens"] == 5
        for count in (1, 2):
            os.kill(daemon.proc.pid, signal.SIGUSR1)
            wait_for(
                lambda n=count: len(list(dumps.glob("snapshot-*.pickle"))) == n,
                30,
                f"snapshot {count}",
            )
        assert sorted(p.name for p in dumps.iterdir()) == [
            "snapshot-000.pickle",
            "snapshot-001.pickle",
        ]
        snapshot = tracemalloc.Snapshot.load(str(dumps / "snapshot-001.pickle"))
        files = {Path(s.traceback[0].filename).name for s in snapshot.statistics("filename")}
        assert "manager.py" in files or "server.py" in files, sorted(files)[:20]
        assert daemon.call("status")["state"] == "ready"  # the daemon goes on
    finally:
        shutil.rmtree(dumps, ignore_errors=True)
