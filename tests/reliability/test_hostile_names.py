"""Hostile model names, repo ids, file names and folders at every entry point.

Each name goes to every RPC method, HTTP route and CLI command that takes one. The
answer must be a rejection (-32602 / 400) or a clean "not found" (-32001 / 404 for
a name that is merely unknown; the Hub stand-in's 404 for a pull that got that far),
never a success, a 5xx or an internal error. Meanwhile a sentinel file and folder
outside the models dir (reachable through symlinks inside it, and by '..' or an
absolute path) must stay exactly as they were: content, mtime, ctime, atime (set
older than mtime, so under relatime any read or listing would move it), inode,
existence. While the requests run, strace follows the daemon and its children:
no system call may name anything under the outside folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DaemonProcess, RpcError, running_daemon, short_tempdir, wait_for
from tests.reliability.test_fuzz_http import _unexpected_tracebacks

MODEL_ID = "Qwen2.5-0.5B-Instruct_W8A8_RK3588"
SECRET = b"SENTINEL: must never be read\n"

# Names that spell a path out of the models dir, or look like one.
ESCAPES = [
    "..",
    ".",
    "../outside/secret",
    "../outside/secret.gguf",
    "../../etc/passwd",
    "a/../../outside/secret",
    "x/../../y",
    "./../outside/dir/inner",
    "..\\outside\\secret",
    "C:\\outside\\secret",
    "C:secret",
    "%2e%2e/outside/secret",
    "~/outside",
]
CONTROL = ["a\x00b", "secret\x00.gguf", "a\nb", "evil\n", "\r", "\t"]
LOOKALIKES = [
    "\uff0e\uff0e\uff0foutside\uff0fsecret",  # fullwidth full stops and solidus
    "..\uff0foutside\uff0fsecret",
    "..\u2215outside\u2215secret",  # division slash
    "\u2024\u2024/outside/secret",  # one-dot leaders
    "\u2025/outside/secret",  # two-dot leader
    "\u2024\u2024",
    "evil\u200b",  # zero-width space
    "\u0435vil",  # Cyrillic e
]
LONG = ["x" * 256, "a/" * 200 + "b", "x" * 20_000]
# Through the symlinks in the models dir: evil.gguf -> outside/secret.gguf, evildir -> outside/dir.
SYMLINKED = ["evil", "evil.gguf", "EVIL", "evildir/inner", "evildir/inner.gguf", "evildir"]

ALL_NAMES = ESCAPES + CONTROL + LOOKALIKES + LONG + SYMLINKED


@dataclass
class Sandbox:
    root: Path
    models: Path
    outside: Path
    daemon: DaemonProcess
    paths: list[Path]
    snapshot: dict[str, tuple[int, ...]] = field(default_factory=dict)
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)

    def record(self, entry: str, outcome: str) -> None:
        counts = self.outcomes.setdefault(entry, {})
        counts[outcome] = counts.get(outcome, 0) + 1


def _outside_state(outside: Path, paths: list[Path]) -> dict[str, tuple[int, ...]]:
    """lstat only (it never moves atime); the paths were listed before atimes were aged."""
    state: dict[str, tuple[int, ...]] = {}
    for path in paths:
        st = path.lstat()
        state[str(path.relative_to(outside))] = (
            st.st_ino,
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
            st.st_atime_ns,
            st.st_mode,
        )
    return state


def _age_atimes(paths: list[Path]) -> None:
    """atime an hour before mtime: relatime then records the next read or listing."""
    for path in paths:
        _age_atimes_file(path)


def _fs_records_atime(root: Path) -> bool:
    probe = root / "atime-probe"
    probe.write_bytes(b"x")
    _age_atimes_file(probe)
    before = probe.stat().st_atime_ns
    probe.read_bytes()
    recorded = probe.stat().st_atime_ns != before
    probe.unlink()
    return recorded


def _age_atimes_file(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_mtime_ns - 3600 * 10**9, st.st_mtime_ns))


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    from tests.fixtures.build_double import double_library, write_model
    from tests.store.hubstub import HubStub

    hub = HubStub().start()
    root = short_tempdir()
    models = root / "models"
    outside = root / "outside"
    (outside / "dir").mkdir(parents=True)
    models.mkdir()
    write_model(models)
    (outside / "secret.gguf").write_bytes(SECRET)
    (outside / "secret.rkllm").write_bytes(SECRET)
    (outside / "dir" / "inner.gguf").write_bytes(SECRET)
    (models / "evil.gguf").symlink_to(outside / "secret.gguf")
    (models / "evil.rkllm").symlink_to(Path("..") / "outside" / "secret.rkllm")
    (models / "evildir").symlink_to(outside / "dir", target_is_directory=True)
    env = {
        "RKLLMD_RKLLM__LIBRARY": str(double_library()),
        "RKLLMD_HUB__ENDPOINT": hub.url,
        "RKLLMD_HUB__MIN_FREE_BYTES": "0",
        "RKLLMD_GENERATION__DEFAULT_MAX_TOKENS": "4",
        # A name that resolves to nothing must come back as the 404 it is: by default
        # the OpenAI routes would answer it with the resident model instead.
        "RKLLMD_HTTP__UNKNOWN_MODEL": "error",
    }
    try:
        with running_daemon(models, env=env, args=["--load", MODEL_ID]) as daemon:
            time.sleep(0.3)  # let the start-up scan settle before the baseline
            paths = [outside, *sorted(outside.rglob("*"))]
            _age_atimes(paths)
            box = Sandbox(root, models, outside, daemon, paths, _outside_state(outside, paths))
            yield box
    finally:
        hub.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def traced(pid: int, log: Path) -> Iterator[bool]:
    """strace the daemon (and its children) for file system calls; False if unavailable."""
    if shutil.which("strace") is None:
        yield False
        return
    tracer = subprocess.Popen(
        ["strace", "-f", "-qq", "-e", "trace=%file", "-o", str(log), "-p", str(pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Attached means every thread of the daemon names strace as its tracer (a fixed
    # sleep could let the first requests go untraced on a slow machine).
    wait_for(
        lambda: tracer.poll() is not None or _traced_by(pid, tracer.pid), 30, "strace to attach"
    )
    if tracer.poll() is not None:
        yield False
        return
    try:
        yield True
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(10)


def _traced_by(pid: int, tracer: int) -> bool:
    """Whether every thread of ``pid`` is being traced by ``tracer``."""
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            status = Path(f"/proc/{pid}/task/{task}/status").read_text()
        except FileNotFoundError:
            continue  # the thread ended
        if f"\nTracerPid:\t{tracer}\n" not in status:
            return False
    return True


def _names_outside(line: str, outside: str) -> bool:
    """Whether a traced call names a path under ``outside`` (a readlink's result aside)."""
    # "PID name(args" or, when strace interleaved another thread's call, the second half
    # "PID <... name resumed>args" (whose strings are the rest: a readlink's result).
    match = re.match(r"\s*\d+\s+(?:<\.\.\. )?(\w+)(?:\(| resumed>)", line)
    strings = re.findall(r'"((?:[^"\\]|\\.)*)"', line)
    if match and match.group(1) in ("readlink", "readlinkat"):
        strings = strings[:-1]  # the link's text: read from inside, it is not a path opened
    return any(s.startswith(outside) or "outside/" in s or "secret" in s for s in strings)


# --- the entry points -----------------------------------------------------------------

OK_RPC = {"invalid_params", "invalid_model_name", "model_not_found", "repo_not_found"}
# 404 not_found: a path with a newline matches no route (the route's pattern is one line).
OK_HTTP = {
    400: {"invalid_params", "invalid_model_name"},
    404: {"model_not_found", "repo_not_found", "not_found"},
}


def _rpc_cases(name: str) -> list[tuple[str, str, dict[str, Any]]]:
    chat = [{"role": "user", "content": "hi"}]
    return [
        ("rpc load", "load", {"model": name}),
        ("rpc show", "show", {"model": name}),
        ("rpc chat", "chat", {"model": name, "messages": chat, "max_tokens": 2}),
        ("rpc embed", "embed", {"model": name, "input": "x"}),
        ("rpc remove", "remove", {"model": name}),
        ("rpc remove force", "remove", {"model": name, "force": True}),
        ("rpc pull repo", "pull", {"repo": name}),
        ("rpc pull repo/name", "pull", {"repo": f"owner/{name}"}),
        ("rpc pull file", "pull", {"repo": "owner/repo", "file": name}),
        ("rpc pull include", "pull", {"repo": "owner/repo", "include": [name]}),
        ("rpc pull revision", "pull", {"repo": "owner/repo", "revision": name}),
    ]


def _http_cases(name: str) -> list[tuple[str, str, str, dict[str, Any] | None]]:
    chat = [{"role": "user", "content": "hi"}]
    quoted = urllib.parse.quote(name, safe="")
    return [
        ("http chat model", "POST", "/v1/chat/completions", {"model": name, "messages": chat}),
        ("http completions model", "POST", "/v1/completions", {"model": name, "prompt": "x"}),
        ("http embeddings model", "POST", "/v1/embeddings", {"model": name, "input": "x"}),
        ("http models/{id}", "GET", f"/v1/models/{quoted}", None),
        ("http models/{id} raw", "GET", "/v1/models/" + urllib.parse.quote(name), None),
        ("http rockchip load", "POST", "/v1/models/load", {"model": name}),
        ("http tabby load", "POST", "/v1/model/load", {"model_name": name}),
        ("http tabby embedding load", "POST", "/v1/model/embedding/load", {"name": name}),
        ("http simple chat", "POST", "/chat", {"model": name, "prompt": "x"}),
        ("http download repo", "POST", "/v1/download", {"repo_id": name}),
        ("http download file", "POST", "/v1/download", {"repo_id": "o/r", "file": name}),
        ("http download revision", "POST", "/v1/download", {"repo": "o/r", "revision": name}),
        ("http download include", "POST", "/v1/download", {"repo": "o/r", "include": [name]}),
        ("http models/download repo", "POST", "/v1/models/download", {"repo_id": name}),
        ("http models/download file", "POST", "/v1/models/download", {"repo": "o/r", "file": name}),
    ]


def _cli_cases(name: str) -> list[tuple[str, list[str]]]:
    return [
        ("cli load", ["load", name]),
        ("cli show", ["show", name]),
        ("cli rm", ["rm", "-y", name]),
        ("cli rm --force", ["rm", "-y", "--force", name]),
        ("cli pull", ["pull", name]),
        ("cli pull file", ["pull", "owner/repo", name]),
        ("cli pull --include", ["pull", "owner/repo", f"--include={name}"]),
        ("cli pull --revision", ["pull", "owner/repo", f"--revision={name}"]),
    ]


def _http(base: str, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _http_outcome(status: int, raw: bytes, path: str) -> str:
    if status == 200 and path == "/v1/models/download":
        # A name that passed validation reached the Hub stand-in, which knows no such repo.
        lines = raw.split(b"\n")
        data = [line[5:] for line in lines if line.startswith(b"data:") and b"[DONE]" not in line]
        events = [json.loads(item) for item in data]
        codes = {e.get("error", {}).get("code") for e in events if isinstance(e, dict)}
        return "stream repo_not_found" if "repo_not_found" in codes else f"200 {raw[:200]!r}"
    if status == 400 and raw.startswith(b"Got more than 8190 bytes"):
        return "400 request line too long (aiohttp)"  # refused before any handler runs
    try:
        body = json.loads(raw)
        # The simple chat dialect answers {"detail", "code"}, the others {"error": {...}}.
        code = body["error"]["code"] if "error" in body else body["code"]
    except (ValueError, KeyError, TypeError):
        return f"{status} non-JSON {raw[:200]!r}"
    return f"{status} {code}" if code in OK_HTTP.get(status, ()) else f"BAD {status} {code}"


def test_hostile_names_everywhere(sandbox: Sandbox) -> None:
    daemon = sandbox.daemon
    records_atime = _fs_records_atime(sandbox.root)
    trace_log = sandbox.root / "strace.log"
    bad: list[str] = []
    ctl = [sys.executable, "-m", "rkllmctl", "--socket", str(daemon.socket), "--json"]
    started = time.monotonic()
    with traced(daemon.proc.pid, trace_log) as tracing:
        client = daemon.client(timeout=30)
        for name in ALL_NAMES:
            for entry, method, params in _rpc_cases(name):
                try:
                    client.call(method, **params)
                    outcome = "ACCEPTED"
                except RpcError as exc:
                    code = exc.data.get("code") if isinstance(exc.data, dict) else None
                    outcome = f"{exc.code} {code}" if code in OK_RPC else f"BAD {exc.error}"
                sandbox.record(entry, outcome)
                if outcome.startswith(("BAD", "ACCEPTED")):
                    bad.append(f"{entry} {name[:60]!r}: {outcome}")
            for entry, method, path, body in _http_cases(name):
                status, raw = _http(daemon.http_url, method, path, body)
                outcome = _http_outcome(status, raw, path)
                sandbox.record(entry, outcome)
                if outcome.startswith(("BAD", "200")) or "non-JSON" in outcome:
                    bad.append(f"{entry} {name[:60]!r}: {outcome}")
            if "\x00" in name or len(name) > 4096:
                continue  # argv cannot carry NUL; the long ones are covered above
            for entry, argv in _cli_cases(name):
                run = subprocess.run(
                    [*ctl, *argv], capture_output=True, text=True, timeout=60, check=False
                )
                outcome = f"exit {run.returncode}"
                sandbox.record(entry, outcome)
                if run.returncode not in (1, 2) or "Traceback" in run.stderr + run.stdout:
                    bad.append(f"{entry} {name[:60]!r}: {outcome} {run.stderr[-300:]!r}")
    elapsed = time.monotonic() - started

    # Still serving, the model in place, nothing outside touched.
    assert daemon.call("status")["model"] == MODEL_ID
    assert (sandbox.models / f"{MODEL_ID}.rkllm").is_file()
    assert (sandbox.models / "evil.gguf").is_symlink() and (sandbox.models / "evildir").is_symlink()
    after = _outside_state(sandbox.outside, sandbox.paths)
    before = sandbox.snapshot
    for rel, (ino, size, mtime, ctime, atime, mode) in before.items():
        now = after[rel]
        assert now[:4] == (ino, size, mtime, ctime) and now[5] == mode, rel
        if records_atime:
            assert now[4] == atime, f"{rel} was read or listed"
    # Reading and listing last (both move atimes).
    assert [sandbox.outside, *sorted(sandbox.outside.rglob("*"))] == sandbox.paths
    for secret in ("secret.gguf", "secret.rkllm", "dir/inner.gguf"):
        assert (sandbox.outside / secret).read_bytes() == SECRET
    touched: list[str] = []
    if tracing:
        outside_text = str(sandbox.outside.resolve())
        lines = trace_log.read_text(errors="replace").splitlines()
        touched = [line for line in lines if _names_outside(line, outside_text)]
    log = daemon.log()
    summary = {
        "names": len(ALL_NAMES),
        "requests": sum(sum(v.values()) for v in sandbox.outcomes.values()),
        "seconds": round(elapsed, 1),
        "atime_checked": records_atime,
        "strace": bool(tracing),
        "outcomes": sandbox.outcomes,
    }
    print(json.dumps({"hostile_names": summary}, ensure_ascii=False))
    assert not bad, "\n".join(bad[:40])
    assert not touched, "\n".join(touched[:20])
    assert "internal error" not in log, log[-3000:]
    # aiohttp's parser logs its own refusal of the over-long request line with a traceback.
    assert _unexpected_tracebacks(log) == 0, log[-3000:]
