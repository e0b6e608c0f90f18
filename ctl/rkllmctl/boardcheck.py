"""Board checks for ``rkllmctl doctor``: what RK3588/RK3576 users get wrong.

SoC, NPU driver version, NPU device access for the service user, librkllmrt
(where, which version), librknnrt (vision encoders), open-file limit, memory
against the model sizes, and CPU/NPU frequency governors. Every check reads files
only (no root needed for most of them) and says what to do when something is off.
``RKLLMCTL_SYSROOT`` points all absolute paths into another tree (used by the tests).
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import resource
import stat
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from rkllmd.rkllmrt import LIBRARY_NAME, SUPPORTED, parse_runtime_version, version_in_file

RKNN_LIBRARY_NAME = "librknnrt.so"  # the daemon's name for it: rkllmd.backends.rkllm.rknn

MIN_DRIVER = (0, 9, 8)
DRIVER_FILES = (
    "/sys/kernel/debug/rknpu/version",
    "/proc/rknpu/version",
    "/sys/module/rknpu/version",
)
SERVICE_USER = "rkllm"
SERVICE_GROUPS = ("rkllm", "render", "video")  # User=, Group= and SupplementaryGroups=
CONFIG_FILE = "/etc/rkllmd/rkllmd.toml"
MIN_NOFILE = 16384


class Check(NamedTuple):
    name: str
    status: str  # "ok" (pass) | "warn" | "fail" | "info"
    detail: str
    fix: str = ""  # what to do about it, when there is something to do


class Sys:
    """Reads the system through an optional root (a fake tree in tests)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.root = env.get("RKLLMCTL_SYSROOT", "")
        self.env = env

    def path(self, absolute: str) -> Path:
        return Path(self.root + absolute)

    def read(self, absolute: str) -> str | None:
        try:
            return self.path(absolute).read_text(errors="replace")
        except OSError:
            return None

    def glob(self, absolute_dir: str, pattern: str) -> list[Path]:
        return sorted(self.path(absolute_dir).glob(pattern))


def find_version(text: str) -> tuple[int, int, int] | None:
    """The first X.Y.Z in a text (a driver's version file)."""
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


# --- SoC and driver ------------------------------------------------------------------------


def soc(fs: Sys) -> str | None:
    raw = fs.read("/proc/device-tree/compatible")
    for entry in (raw or "").split("\0"):
        if entry.startswith("rockchip,rk"):
            return entry.split(",", 1)[1].upper()
    return None


def check_driver(fs: Sys, on_rockchip: bool) -> Check:
    for name in DRIVER_FILES:
        text = fs.read(name)
        if text is None:
            continue
        version = find_version(text)
        if version is None:
            continue
        shown = ".".join(map(str, version))
        if version >= MIN_DRIVER:
            return Check("npu driver", "ok", f"RKNPU {shown} (from {name})")
        return Check(
            "npu driver",
            "fail",
            f"RKNPU {shown} is older than 0.9.8 (from {name})",
            "update the board's vendor kernel (its rknpu driver) to 0.9.8 or newer",
        )
    if not on_rockchip:
        return Check("npu driver", "info", "no RKNPU driver (not a Rockchip board)")
    return Check(
        "npu driver",
        "warn",
        "cannot read the RKNPU driver version",
        "run as root: cat /sys/kernel/debug/rknpu/version (needs 0.9.8 or newer)",
    )


# --- the device node -----------------------------------------------------------------------


def npu_nodes(fs: Sys) -> list[str]:
    nodes = ["/dev/rknpu"] if fs.path("/dev/rknpu").exists() else []
    for card in fs.glob("/sys/class/drm", "*"):
        driver = (card / "device" / "driver").resolve().name.lower()
        uevent = fs.read(f"/sys/class/drm/{card.name}/device/uevent") or ""
        if "rknpu" in driver or "DRIVER=RKNPU" in uevent.upper():
            nodes.append(f"/dev/dri/{card.name}")
    return nodes


def _node_groups(fs: Sys, node: str) -> tuple[str, int]:
    info = fs.path(node).stat()
    try:
        group = grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        group = str(info.st_gid)
    return group, stat.S_IMODE(info.st_mode)


def _service_groups() -> set[str] | None:
    try:
        user = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return None
    names = {g.gr_name for g in grp.getgrall() if SERVICE_USER in g.gr_mem}
    with_primary = names | {grp.getgrgid(user.pw_gid).gr_name}
    return with_primary | set(SERVICE_GROUPS[1:])  # the unit adds render and video


def check_device(fs: Sys, on_rockchip: bool) -> Check:
    nodes = npu_nodes(fs)
    if not nodes:
        status = "fail" if on_rockchip else "info"
        fix = "load the rknpu driver (vendor kernel)" if on_rockchip else ""
        return Check("npu device", status, "no NPU device node (/dev/rknpu or rknpu DRM)", fix)
    node = nodes[0]
    group, mode = _node_groups(fs, node)
    you = os.access(fs.path(node), os.R_OK | os.W_OK)
    detail = f"{node} (group {group}, mode {mode:04o}); you: {'rw' if you else 'no access'}"
    service = _service_groups()
    if service is None:
        return Check(
            "npu device",
            "ok" if you else "warn",
            detail + "; no rkllm user yet",
            "" if you else f"add yourself to group {group} (then log in again)",
        )
    if group in service and mode & 0o060 == 0o060:
        return Check("npu device", "ok", detail + "; the rkllm service user can use it")
    return Check(
        "npu device",
        "fail",
        detail + "; the rkllm service user cannot open it",
        f"sudo usermod -aG {group} {SERVICE_USER} (or a udev rule giving the node to render)",
    )


# --- librkllmrt ---------------------------------------------------------------------------


def _configured_library(fs: Sys, key: str = "library") -> str | None:
    path = fs.env.get(f"RKLLMD_RKLLM__{key.upper()}")
    if path:
        return path
    config = fs.env.get("RKLLMD_CONFIG") or CONFIG_FILE
    try:
        with fs.path(config).open("rb") as handle:
            section = tomllib.load(handle).get("rkllm") or {}
    except (OSError, tomllib.TOMLDecodeError):
        return None
    value = section.get(key)
    return str(value) if value else None


def find_library(fs: Sys, name: str = LIBRARY_NAME, key: str = "library") -> tuple[str | None, str]:
    """(path, how it was found), in the daemon's order."""
    configured = _configured_library(fs, key)
    if configured:
        return (configured if fs.path(configured).is_file() else None), f"rkllm.{key}"
    for directory in [d for d in fs.env.get("LD_LIBRARY_PATH", "").split(":") if d]:
        if (fs.path(directory) / name).is_file():
            return f"{directory}/{name}", "LD_LIBRARY_PATH"
    for directory in ("/usr/lib/aarch64-linux-gnu", "/usr/local/lib", "/lib", "/usr/lib"):
        if (fs.path(directory) / name).is_file():
            return f"{directory}/{name}", "loader path"
    return None, "search"


def runtime_supported(version: str) -> bool:
    runtime = parse_runtime_version(version)
    return runtime is not None and runtime.abi is not None


def check_library(fs: Sys) -> Check:
    path, how = find_library(fs)
    if path is None:
        if how == "rkllm.library":
            return Check(
                "librkllmrt",
                "fail",
                "rkllm.library points to a missing file",
                "fix rkllm.library in /etc/rkllmd/rkllmd.toml",
            )
        return Check(
            "librkllmrt",
            "warn",
            "not found (needed only for .rkllm models)",
            "install librkllmrt.so from rknn-llm into /usr/lib (docs/board-setup.md)",
        )
    version = version_in_file(fs.path(path))
    where = f"{path} (via {how})"
    if version is None:
        return Check(
            "librkllmrt",
            "warn",
            f"{where}, version unknown",
            "set rkllm.version in /etc/rkllmd/rkllmd.toml to the runtime's version",
        )
    if not runtime_supported(version):
        return Check(
            "librkllmrt",
            "fail",
            f"{where}, runtime {version} is not supported",
            f"install runtime {SUPPORTED}",
        )
    return Check("librkllmrt", "ok", f"{where}, runtime {version}")


def check_rknn_library(fs: Sys) -> Check:
    """librknnrt runs the .rknn vision encoders of NPU vision models; nothing else needs it."""
    path, how = find_library(fs, RKNN_LIBRARY_NAME, "rknn_library")
    if path is not None:
        return Check("librknnrt", "ok", f"{path} (via {how})")
    if how == "rkllm.rknn_library":
        return Check(
            "librknnrt",
            "fail",
            "rkllm.rknn_library points to a missing file",
            "fix rkllm.rknn_library in /etc/rkllmd/rkllmd.toml",
        )
    return Check(
        "librknnrt",
        "info",
        "not found (needed only for NPU vision models with a .rknn encoder)",
        "for vision on the NPU: install librknnrt.so from rknn-toolkit2 into /usr/lib "
        "(docs/board-setup.md, Vision models)",
    )


# --- limits, memory, governors ---------------------------------------------------------------


def check_nofile() -> Check:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    detail = f"soft {soft}, hard {hard} (the worker raises soft to hard; the unit sets 65536)"
    if hard != resource.RLIM_INFINITY and hard < MIN_NOFILE:
        return Check(
            "open files",
            "warn",
            detail,
            "raise it (LimitNOFILE= in the unit, or ulimit -n 65536 when run by hand)",
        )
    return Check("open files", "ok", detail)


def meminfo(fs: Sys) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in (fs.read("/proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        number = rest.split()
        if number and number[0].isdigit():
            values[key] = int(number[0]) * 1024
    return values


def check_memory(fs: Sys, models: Iterable[dict[str, Any]]) -> Check:
    available = meminfo(fs).get("MemAvailable")
    if available is None:
        return Check("memory", "info", "MemAvailable unknown")
    waiting = [m for m in models if m.get("format") == "rkllm" and not m.get("loaded")]
    detail = f"{available / 2**30:.1f} GiB available"
    too_big = [m for m in waiting if int(m.get("size_bytes") or 0) * 1.1 > available]
    if too_big:
        names = ", ".join(str(m.get("id")) for m in too_big[:3])
        return Check(
            "memory",
            "warn",
            f"{detail}; larger than that with KV cache: {names}",
            "free memory, use a smaller model, or set embed_flash/ctx_size lower",
        )
    return Check(
        "memory", "ok", detail + (f"; fits the {len(waiting)} .rkllm models" if waiting else "")
    )


def governors(fs: Sys) -> dict[str, str]:
    found: dict[str, str] = {}
    for policy in fs.glob("/sys/devices/system/cpu/cpufreq", "policy*/scaling_governor"):
        found[policy.parent.name] = policy.read_text().strip()
    for device in fs.glob("/sys/class/devfreq", "*"):
        if "npu" in device.name and (device / "governor").is_file():
            found[device.name] = (device / "governor").read_text().strip()
    return found


def check_governors(fs: Sys, on_rockchip: bool) -> Check:
    found = governors(fs)
    if not found:
        return Check("governors", "info", "no cpufreq/devfreq governors visible")
    detail = ", ".join(f"{k}={v}" for k, v in sorted(found.items()))
    if all(v == "performance" for v in found.values()):
        return Check("governors", "ok", detail)
    status = "warn" if on_rockchip else "info"
    return Check(
        "governors",
        status,
        detail,
        "for steady tokens/s: sudo systemctl enable --now rkllmd-performance",
    )


def board_checks(env: Mapping[str, str], models: list[dict[str, Any]]) -> list[Check]:
    fs = Sys(env)
    chip = soc(fs)
    on_rockchip = chip is not None
    return [
        check_driver(fs, on_rockchip),
        check_device(fs, on_rockchip),
        check_library(fs),
        check_rknn_library(fs),
        check_nofile(),
        check_memory(fs, models),
        check_governors(fs, on_rockchip),
    ]
