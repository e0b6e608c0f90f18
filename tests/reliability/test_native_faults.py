"""Native faults in a loop, and the systemd watchdog when the event loop is wedged.

Each mode is repeated: after every failure the daemon is up, the request got a
clear error, `status` reports the failure, the healthy model loads and answers,
and the daemon has no zombie children.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.backends.conftest import NpuDaemon
from tests.fixtures.build_double import write_model
from tests.helpers import DaemonProcess, RpcError, wait_for
from tests.reliability.stress import (
    MODEL_ID,
    CallLog,
    children,
    record,
    zombies,
)

BROKEN = "Qwen2.5-broken"
FAST_CHECKS = 1_000_000  # WATCHDOG_USEC: the stuck check then runs every 0.5 s

# mode -> (extra env, cycles, expected data.code, words in the message, state after)
MODES: dict[str, tuple[dict[str, str], int, str, str, str]] = {
    "segv": ({}, 10, "backend_crashed", "SIGSEGV", "failed"),
    "error": ({}, 5, "generation_failed", "NPU runtime reported an error", "ready"),
    "init": ({}, 5, "load_failed", "failed to malloc npu memory", "failed"),
    "hang": (
        {"RKLLMD_WORKER__STUCK_SECONDS": "1"},
        3,
        "backend_crashed",
        "stopped responding",
        "failed",
    ),
    "sigkill": ({}, 5, "backend_crashed", "SIGKILL", "failed"),
}


def ask(daemon: DaemonProcess, text: str) -> dict[str, Any]:
    result: dict[str, Any] = daemon.call("chat", messages=[{"role": "user", "content": text}])
    return result


@pytest.mark.parametrize("mode", list(MODES))
def test_repeated_native_faults(
    npu_daemon: NpuDaemon, npu_models: Path, call_log: CallLog, mode: str
) -> None:
    extra, cycles, code, words, state_after = MODES[mode]
    write_model(npu_models, f"{BROKEN}.rkllm")
    env = {"RKLLMD_WORKER__ABORT_GRACE_SECONDS": "1", **extra}
    if mode != "sigkill":
        env |= {"RKLLM_DOUBLE_FAIL": mode, "RKLLM_DOUBLE_FAIL_MODEL": "broken"}
    if mode == "hang":
        env["RKLLM_DOUBLE_FAIL_AFTER"] = "1"
    if mode == "sigkill":
        env["RKLLM_DOUBLE_TOKEN_DELAY_US"] = "20000"
    daemon = _start(npu_daemon, env)
    pid = daemon.proc.pid
    started = time.monotonic()
    for cycle in range(cycles):
        client = daemon.client()
        if mode == "init":
            with pytest.raises(RpcError) as err:
                client.call("load", model=BROKEN)
        else:
            daemon.call("load", model=BROKEN)
            worker = daemon.call("status")["worker_pid"]
            request = client.start(
                "chat", messages=[{"role": "user", "content": "[[repeat:200]]"}], stream=True
            )
            if mode == "sigkill":
                assert client.read_message()["method"] == "token"
                os.kill(worker, signal.SIGKILL)
            with pytest.raises(RpcError) as err:
                client.finish(request)
        client.close()
        assert err.value.data["code"] == code, (cycle, err.value.error)
        assert words in err.value.error["message"], (cycle, err.value.error)
        assert daemon.proc.poll() is None
        status = daemon.call("status")
        # From the second cycle on a model is loaded when the broken load fails, and
        # a failed load brings it back: the daemon stays ready.
        expected = "ready" if mode == "init" and cycle > 0 else state_after
        assert status["state"] == expected, (cycle, status)
        if expected == "failed":
            assert status["model"] == BROKEN and words in status["reason"]
        if mode == "init":
            failure = status["load_failure"]
            assert failure["model"] == BROKEN and words in failure["reason"]
            assert failure["restored"] == (MODEL_ID if cycle > 0 else None)
        # The next load works and answers.
        assert daemon.call("load", model=MODEL_ID)["state"] == "ready"
        assert ask(daemon, f"[[say:ok {cycle}]]")["message"]["content"] == f"ok {cycle}"
        wait_for(lambda: not zombies(pid), 10, "no zombie children")
        assert len(children(pid)) == 1  # the healthy worker, nothing else
    assert "never retrieved" not in daemon.log()
    record(
        f"native-fault-{mode}",
        cycles=cycles,
        error_code=code,
        seconds=round(time.monotonic() - started, 1),
        daemon_up=True,
        zombies=len(zombies(pid)),
    )


def _start(npu_daemon: NpuDaemon, env: dict[str, str]) -> DaemonProcess:
    # npu_daemon() has no watchdog_usec; the daemon inherits it from the environment.
    env = {**env, "WATCHDOG_USEC": str(FAST_CHECKS)}
    return npu_daemon(env=env, load=False)


def test_abort_ignored_in_a_loop(
    npu_daemon: NpuDaemon, npu_models: Path, call_log: CallLog
) -> None:
    """A runtime that ignores rkllm_abort: the worker is killed after the grace, every time."""
    write_model(npu_models, f"{BROKEN}.rkllm")
    env = {
        "RKLLM_DOUBLE_FAIL": "ignore_abort",
        "RKLLM_DOUBLE_FAIL_MODEL": "broken",
        "RKLLM_DOUBLE_FAIL_AFTER": "0",
        # The kill comes this long after the abort was sent; the worker must have called
        # rkllm_abort by then (counted below), which a loaded machine may delay.
        "RKLLMD_WORKER__ABORT_GRACE_SECONDS": "3",
    }
    daemon = _start(npu_daemon, env)
    pid = daemon.proc.pid
    started = time.monotonic()
    for cycle in range(3):
        daemon.call("load", model=BROKEN)
        worker = daemon.call("status")["worker_pid"]
        runs = len(call_log.runs())
        client = daemon.client()
        client.start("chat", messages=[{"role": "user", "content": f"c{cycle}"}], stream=True)
        wait_for(lambda n=runs: len(call_log.runs()) > n, 10, "the run")
        client.close()  # the caller gives up; the abort is ignored
        wait_for(lambda w=worker: w not in [c[0] for c in children(pid)], 15, "worker killed")
        # Killed is not yet known: the daemon reads the exit from the worker's pipe.
        wait_for(lambda: daemon.call("status")["state"] == "failed", 15, "the failure to show")
        assert "did not stop after an abort" in daemon.call("status")["reason"]
        assert daemon.call("load", model=MODEL_ID)["state"] == "ready"
        assert ask(daemon, "[[say:fine]]")["message"]["content"] == "fine"
        wait_for(lambda: not zombies(pid), 10, "no zombie children")
    assert len(call_log.calls("rkllm_abort")) == 3
    record(
        "native-fault-ignore_abort",
        cycles=3,
        seconds=round(time.monotonic() - started, 1),
        zombies=len(zombies(pid)),
    )


# --- watchdog ------------------------------------------------------------------------------


def test_watchdog_pings_stop_while_the_loop_is_blocked(npu_daemon: NpuDaemon) -> None:
    block = 3.0
    daemon = npu_daemon(
        env={"WATCHDOG_USEC": "400000", "_RKLLMD_TEST_BLOCK_LOOP_SECONDS": str(block)}
    )

    def pings(after: float) -> list[float]:
        """Kernel receive times of the WATCHDOG=1 datagrams sent after ``after``."""
        return [t for t, m in list(daemon.notify.received) if m == "WATCHDOG=1" and t > after]

    def gaps(after: float) -> list[float]:
        times = pings(after)
        return [b - a for a, b in itertools.pairwise(times)]

    wait_for(lambda: len(pings(0)) >= 3, 20, "regular pings")
    # From 1 s before the signal (several pings 0.2 s apart), so that the last ping
    # before the block is counted even if the loop takes the signal at once.
    since = time.time() - 1.0
    daemon.proc.send_signal(signal.SIGUSR2)
    # When the loop takes the signal is up to the scheduler; what is certain is that
    # it then sleeps `block` s, so two consecutive pings are that far apart. Measured
    # on the kernel's receive times of the datagrams, not on when this test sees them.
    # Without the block, pings stay 0.2 s apart.
    wait_for(
        lambda: any(gap >= block - 0.5 for gap in gaps(since)[:-3]),
        30,
        "a gap in the pings, then 3 more",
    )
    longest = max(gaps(since))
    assert daemon.call("status")["state"] == "ready"
    record(
        "watchdog-loop-blocked",
        watchdog_usec=400000,
        blocked_seconds=block,
        longest_gap_s=round(longest, 2),
        resumed=True,
    )
