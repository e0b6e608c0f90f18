"""``rkllmctl doctor`` board checks: on this (non-Rockchip) machine and on a fake board."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rkllmctl.boardcheck import check_memory, runtime_supported
from rkllmctl.cli import run

from tests.fixtures.build_double import double_library


def doctor(env: dict[str, str]) -> tuple[int, dict[str, dict[str, str]]]:
    out, err = io.StringIO(), io.StringIO()
    code = run(
        ["--socket", "/tmp/rk-missing.sock", "--json", "doctor"],
        env=env,
        stdin=io.StringIO(""),
        stdout=out,
        stderr=err,
    )
    body = json.loads(out.getvalue())
    return code, {check["name"]: check for check in body["checks"]}


def test_doctor_on_this_machine() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rkllmctl", "--socket", "/tmp/rk-missing.sock", "doctor"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("RKLLM")},
    )
    assert proc.returncode == 1  # the daemon is not running
    lines = proc.stdout.splitlines()
    names = [line[6:].split("  ")[0].strip() for line in lines if not line.startswith(" ")]
    assert names == [
        "python",
        "socket",
        "daemon",
        "render nodes",
        "board",
        "npu driver",
        "npu device",
        "librkllmrt",
        "librknnrt",
        "open files",
        "memory",
        "governors",
    ]
    if not Path("/proc/device-tree/compatible").exists():
        assert "info  npu driver    no RKNPU driver (not a Rockchip board)" in lines
        assert any(line.strip().startswith("-> .rkllm models need") for line in lines)


@pytest.fixture
def board(tmp_path: Path) -> Path:
    """A fake RK3588 with an old driver, a misc NPU node and on-demand governors."""
    root = tmp_path / "root"
    files = {
        "proc/device-tree/compatible": "radxa,rock-5b\0rockchip,rk3588\0",
        "sys/kernel/debug/rknpu/version": "RKNPU driver: v0.9.6\n",
        "sys/devices/system/cpu/cpufreq/policy0/scaling_governor": "schedutil\n",
        "sys/devices/system/cpu/cpufreq/policy4/scaling_governor": "performance\n",
        "sys/class/devfreq/fdab0000.npu/governor": "rknpu_ondemand\n",
        "proc/meminfo": "MemTotal: 16000000 kB\nMemAvailable: 4194304 kB\n",
        "dev/rknpu": "",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_fake_board(board: Path) -> None:
    _, checks = doctor({"RKLLMCTL_SYSROOT": str(board)})
    assert checks["npu driver"]["status"] == "fail"
    assert "0.9.6 is older than 0.9.8" in checks["npu driver"]["detail"]
    assert "0.9.8" in checks["npu driver"]["fix"]
    assert checks["npu device"]["detail"].startswith("/dev/rknpu (group ")
    assert checks["governors"]["status"] == "warn"
    assert "fdab0000.npu=rknpu_ondemand" in checks["governors"]["detail"]
    assert "rkllmd-performance" in checks["governors"]["fix"]
    assert checks["memory"]["detail"].startswith("4.0 GiB available")
    assert checks["librkllmrt"]["status"] == "warn"

    (board / "sys/kernel/debug/rknpu/version").write_text("RKNPU driver: v0.9.8\n")
    _, checks = doctor({"RKLLMCTL_SYSROOT": str(board)})
    assert checks["npu driver"]["status"] == "ok"


def test_driver_version_needs_root_to_read(board: Path) -> None:
    (board / "sys/kernel/debug/rknpu/version").unlink()
    _, checks = doctor({"RKLLMCTL_SYSROOT": str(board)})
    assert checks["npu driver"]["status"] == "warn"
    assert "cat /sys/kernel/debug/rknpu/version" in checks["npu driver"]["fix"]
    (board / "sys/module/rknpu").mkdir(parents=True)
    (board / "sys/module/rknpu/version").write_text("0.9.8\n")
    _, checks = doctor({"RKLLMCTL_SYSROOT": str(board)})
    assert checks["npu driver"]["status"] == "ok"


def test_drm_npu_node_is_found(board: Path) -> None:
    (board / "dev/rknpu").unlink()
    card = board / "sys/class/drm/renderD129/device"
    card.mkdir(parents=True)
    (card / "uevent").write_text("DRIVER=RKNPU\nOF_NAME=npu\n")
    (board / "dev/dri").mkdir(parents=True)
    (board / "dev/dri/renderD129").write_text("")
    _, checks = doctor({"RKLLMCTL_SYSROOT": str(board)})
    assert checks["npu device"]["detail"].startswith("/dev/dri/renderD129 (group ")


@pytest.mark.parametrize(
    ("version", "banner", "status"),
    [
        ("1.3.0", True, "ok"),
        ("1.2.3", True, "ok"),
        ("1.1.4", True, "fail"),
        ("1.3.0", False, "warn"),
    ],
)
def test_library_version(board: Path, version: str, banner: bool, status: str) -> None:
    lib = double_library(13, version, banner)
    target = board / "usr/lib/librkllmrt.so"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(lib, target)
    _, checks = doctor({"RKLLMCTL_SYSROOT": str(board)})
    check = checks["librkllmrt"]
    assert check["status"] == status
    assert check["detail"].startswith("/usr/lib/librkllmrt.so (via loader path)")
    if status == "ok":
        assert f"runtime {version}" in check["detail"]


def test_configured_library_is_checked_first(board: Path) -> None:
    config = board / "etc/rkllmd/rkllmd.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[rkllm]\nlibrary = "/opt/rkllm/librkllmrt.so"\n')
    _, checks = doctor({"RKLLMCTL_SYSROOT": str(board)})
    assert checks["librkllmrt"]["status"] == "fail"
    assert "rkllm.library" in checks["librkllmrt"]["detail"]
    (board / "opt/rkllm").mkdir(parents=True)
    shutil.copyfile(double_library(), board / "opt/rkllm/librkllmrt.so")
    _, checks = doctor({"RKLLMCTL_SYSROOT": str(board)})
    assert checks["librkllmrt"]["detail"] == (
        "/opt/rkllm/librkllmrt.so (via rkllm.library), runtime 1.3.0"
    )


def test_rknn_library_for_npu_vision(board: Path) -> None:
    _, checks = doctor({"RKLLMCTL_SYSROOT": str(board)})
    assert checks["librknnrt"]["status"] == "info"
    assert "rknn-toolkit2" in checks["librknnrt"]["fix"]
    (board / "usr/lib").mkdir(parents=True, exist_ok=True)
    (board / "usr/lib/librknnrt.so").write_bytes(b"\x7fELF")
    _, checks = doctor({"RKLLMCTL_SYSROOT": str(board)})
    assert checks["librknnrt"]["status"] == "ok"
    assert checks["librknnrt"]["detail"] == "/usr/lib/librknnrt.so (via loader path)"
    # A configured path wins, and a wrong one is an error, not a fallback.
    _, checks = doctor(
        {"RKLLMCTL_SYSROOT": str(board), "RKLLMD_RKLLM__RKNN_LIBRARY": "/opt/missing.so"}
    )
    assert checks["librknnrt"]["status"] == "fail"
    assert "rkllm.rknn_library" in checks["librknnrt"]["detail"]


def test_memory_against_model_sizes(board: Path) -> None:
    from rkllmctl.boardcheck import Sys

    fs = Sys({"RKLLMCTL_SYSROOT": str(board)})
    models = [
        {"id": "big", "format": "rkllm", "size_bytes": 5 * 2**30, "loaded": False},
        {"id": "cpu", "format": "gguf", "size_bytes": 9 * 2**30, "loaded": False},
        {"id": "small", "format": "rkllm", "size_bytes": 2**30, "loaded": False},
    ]
    check = check_memory(fs, models)
    assert check.status == "warn" and "big" in check.detail and "small" not in check.detail
    assert check_memory(fs, models[2:]).status == "ok"


def test_runtime_support_rule() -> None:
    assert [
        runtime_supported(v)
        for v in ("1.3.0", "1.2.1", "1.2.3", "1.2.0", "1.2.1b1", "1.1.4", "2.0.0")
    ] == [True, True, True, False, False, False, False]
