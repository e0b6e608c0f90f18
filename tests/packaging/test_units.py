"""Quick checks of the systemd units and the frequency script on the host (seconds).

The full proof, the .deb booted under systemd-nspawn, is `make test-package`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO

SYSTEMD = REPO / "systemd"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


@needs_analyze
def test_units_verify_clean(tmp_path: Path) -> None:
    # verify also checks that ExecStart= exists: point it at a binary this host has.
    for name in ("rkllmd.service", "rkllmd.socket", "rkllmd-performance.service"):
        text = (SYSTEMD / name).read_text()
        text = re.sub(r"^(Exec(Start|Stop)=)/usr/\S+", r"\1/bin/true", text, flags=re.M)
        (tmp_path / name).write_text(text)
    names = ["rkllmd.service", "rkllmd.socket", "rkllmd-performance.service"]
    run = subprocess.run([ANALYZE, "verify", *names], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0 and not (run.stdout + run.stderr).strip(), run.stdout + run.stderr


@needs_analyze
def test_service_exposure_at_most_2_5() -> None:
    run = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(SYSTEMD / "rkllmd.service")],
        capture_output=True,
        text=True,
    )
    match = re.search(r"Overall exposure level for rkllmd.service: ([0-9.]+)", run.stdout)
    assert match, run.stdout + run.stderr
    assert float(match.group(1)) <= 2.5, run.stdout


def test_service_keeps_what_the_npu_and_ctypes_need() -> None:
    unit = (SYSTEMD / "rkllmd.service").read_text()
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#")
    )
    assert settings["Type"] == "notify" and settings["NotifyAccess"] == "main"
    assert "char-drm rw" in unit and "/dev/rknpu rw" in unit
    for forbidden in ("PrivateDevices", "MemoryDenyWriteExecute", "ProcSubset"):
        assert forbidden not in settings, forbidden
    drain = 15  # config.py drain_seconds default
    assert int(settings["TimeoutStopSec"].rstrip("s")) > drain + 5
    assert settings["KillMode"] == "mixed" and settings["User"] == "rkllm"


def test_performance_script_pins_and_restores(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    files = {
        "devices/system/cpu/cpufreq/policy0/scaling_governor": "schedutil",
        "devices/system/cpu/cpufreq/policy4/scaling_governor": "schedutil",
        "class/devfreq/fdab0000.npu/governor": "rknpu_ondemand",
        "class/devfreq/dmc/governor": "dmc_ondemand",
        "class/devfreq/fb000000.gpu/governor": "simple_ondemand",  # not ours: untouched
    }
    for rel, value in files.items():
        (sysfs / rel).parent.mkdir(parents=True)
        (sysfs / rel).write_text(value + "\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "RKLLMD_PERF_SYSFS": str(sysfs),
        "RKLLMD_PERF_STATE": str(tmp_path / "state" / "governors"),
    }
    script = str(SYSTEMD / "rkllmd-performance")

    subprocess.run([script, "pin"], env=env, check=True, capture_output=True)
    now = {rel: (sysfs / rel).read_text().strip() for rel in files}
    assert now.pop("class/devfreq/fb000000.gpu/governor") == "simple_ondemand"
    assert set(now.values()) == {"performance"}

    subprocess.run([script, "pin"], env=env, check=True, capture_output=True)  # idempotent
    subprocess.run([script, "restore"], env=env, check=True, capture_output=True)
    assert {rel: (sysfs / rel).read_text().strip() for rel in files} == files
