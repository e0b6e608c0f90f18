"""A fleet on loopback: N daemons on the librkllmrt double behind a real HAProxy.

HAProxy runs the configuration printed in docs/scale-out.md, taken from the page
at run time. Only what a test run cannot keep is changed: the listen and server
addresses (loopback ports), the stats socket and the log (a temp dir), and the
privilege and daemon lines. Used by tests/fleet and bench/fleet.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.backends.conftest import CallLog
from tests.fixtures.build_double import double_library, write_model
from tests.helpers import REPO, DaemonProcess, free_port, short_tempdir, wait_for

MODEL = "Qwen2.5-0.5B-Instruct_W8A8_RK3588"
DOC = REPO / "docs" / "scale-out.md"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
BACKEND = "rkllmd"
# Lines of the documented global section that need root, a chroot or a fork.
DROPPED = ("chroot ", "user ", "group ", "daemon")


def documented_config() -> str:
    """The HAProxy configuration block of docs/scale-out.md, as written."""
    found = re.search(r"```haproxy\n(.*?)```", DOC.read_text(), re.S)
    if found is None:
        raise AssertionError(f"{DOC} has no ```haproxy block")
    return found.group(1)


def render_config(listen_port: int, servers: list[tuple[str, int]], workdir: Path) -> str:
    """The documented configuration with loopback addresses and temp paths."""
    out: list[str] = []
    for line in documented_config().splitlines():
        stripped = line.strip()
        indent = line[: len(line) - len(line.lstrip())]
        if stripped.startswith(DROPPED):
            continue
        if stripped.startswith("log /dev/log"):
            out.append(f"{indent}log stdout format raw local0")
        elif stripped.startswith("stats socket "):
            rest = stripped.split(None, 3)[3]
            out.append(f"{indent}stats socket {workdir / 'admin.sock'} {rest}")
        elif stripped.startswith("bind "):
            out.append(f"{indent}bind 127.0.0.1:{listen_port}")
        elif stripped.startswith("server "):
            if not any(o.lstrip().startswith("server ") for o in out[-1:]):
                options = stripped.split(None, 3)[3:]  # whatever follows the address
                suffix = f" {options[0]}" if options else ""
                out.extend(f"{indent}server {n} 127.0.0.1:{p}{suffix}" for n, p in servers)
        else:
            out.append(line)
    return "\n".join(out) + "\n"


class HAProxy:
    """``haproxy -db`` on the rendered configuration, with its stats socket."""

    def __init__(self, servers: list[tuple[str, int]]) -> None:
        self.dir = short_tempdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = self.dir / "haproxy.cfg"
        self.config.write_text(render_config(self.port, servers, self.dir))
        self.log_path = self.dir / "haproxy.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(self.config)], stdout=self._log, stderr=subprocess.STDOUT
        )

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(self.dir / "admin.sock"))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def states(self) -> dict[str, str]:
        """Server name -> HAProxy's status of it (UP, DOWN, "UP 1/2", ...)."""
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {
            row["svname"]: row["status"]
            for row in rows
            if row["pxname"] == BACKEND and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def wait_state(self, name: str, state: str, timeout: float = 30.0) -> None:
        def reached() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"haproxy exited {self.proc.returncode}:\n{self.log()}")
            return self.states().get(name) == state

        wait_for(reached, timeout, f"haproxy to see {name} {state}", interval=0.1)

    def wait_socket(self, timeout: float = 15.0) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"haproxy exited {self.proc.returncode}:\n{self.log()}")
            try:
                self.command("show info")
            except OSError:
                return False
            return True

        wait_for(up, timeout, "the haproxy stats socket")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)  # soft stop: ends once connections close
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Instance:
    name: str
    daemon: DaemonProcess
    calls: CallLog
    models: Path

    def runs(self) -> int:
        return len(self.calls.runs())


@dataclass
class Fleet:
    instances: list[Instance]
    proxy: HAProxy
    extra_models: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.proxy.url

    def by_name(self, name: str) -> Instance:
        return next(i for i in self.instances if i.name == name)

    def wait_all_up(self, timeout: float = 30.0) -> None:
        for instance in self.instances:
            self.proxy.wait_state(instance.name, "UP", timeout)

    def kill(self, name: str) -> None:
        """SIGKILL a daemon, as a board losing power (its worker follows: PDEATHSIG)."""
        instance = self.by_name(name)
        instance.daemon.proc.send_signal(signal.SIGKILL)
        instance.daemon.proc.wait()


def start_instance(
    name: str,
    token_delay_us: int,
    env: dict[str, str],
    extra_models: list[str],
    load: str = MODEL,
) -> Instance:
    """A daemon on the double with MODEL and ``extra_models`` in its dir, ``load`` loaded."""
    models = short_tempdir() / "models"
    models.mkdir()
    for model in {MODEL, load, *extra_models}:
        write_model(models, f"{model}.rkllm")
    calls = CallLog(models.parent / "calls.jsonl")
    environment = {
        "RKLLMD_RKLLM__LIBRARY": str(double_library()),
        "RKLLM_DOUBLE_LOG": str(calls.path),
        "RKLLM_DOUBLE_TOKEN_DELAY_US": str(token_delay_us),
        **env,
    }
    daemon = DaemonProcess(models, env=environment, args=["--load", load, "--log-level", "info"])
    return Instance(name, daemon, calls, models)


@contextlib.contextmanager
def fleet(
    size: int = 3,
    *,
    token_delay_us: int = 20_000,
    env: dict[str, str] | None = None,
    per_instance_env: dict[str, dict[str, str]] | None = None,
    extra_models: list[str] = (),
) -> Iterator[Fleet]:
    """``size`` daemons (b1, b2, ...) serving MODEL on the double, HAProxy in front."""
    instances: list[Instance] = []
    proxy: HAProxy | None = None
    try:
        for n in range(1, size + 1):
            name = f"b{n}"
            merged = {**(env or {}), **(per_instance_env or {}).get(name, {})}
            instances.append(start_instance(name, token_delay_us, merged, list(extra_models)))
        for instance in instances:  # started together, waited for in turn
            instance.daemon.wait_ready(90)
        proxy = HAProxy([(i.name, i.daemon.http_port) for i in instances])
        proxy.wait_socket()
        result = Fleet(instances, proxy, list(extra_models))
        result.wait_all_up()
        yield result
    finally:
        if proxy is not None:
            proxy.stop()
        for instance in instances:
            instance.daemon.stop()
            shutil.rmtree(instance.models.parent, ignore_errors=True)


def chat_body(tokens: int, model: str = MODEL, stream: bool = True) -> dict[str, object]:
    return {
        "model": model,
        "stream": stream,
        "max_tokens": tokens,
        "messages": [{"role": "user", "content": f"{time.monotonic_ns()} [[repeat:{tokens}]]"}],
    }


@dataclass
class Outcome:
    started: float
    served_by: str | None = None
    first_byte: float | None = None
    ended: float | None = None
    ok: bool = False
    error: str = ""


async def stream_once(
    session: aiohttp.ClientSession, url: str, tokens: int, outcome: Outcome
) -> Outcome:
    """One streamed chat, recorded into ``outcome`` as it goes (others watch it)."""
    try:
        async with session.post(f"{url}/v1/chat/completions", json=chat_body(tokens)) as response:
            outcome.served_by = response.headers.get("X-Served-By")
            if response.status != 200:
                outcome.error = f"HTTP {response.status}: {await response.text()}"
                return outcome
            outcome.first_byte = time.monotonic()
            text, done = "", False
            async for line in response.content:
                if line.startswith(b"data: [DONE]"):
                    done = True
                elif line.startswith(b"data: "):
                    choices = json.loads(line[6:])["choices"]
                    text += (choices[0]["delta"].get("content") or "") if choices else ""
            outcome.ok = done and text == " tok" * tokens
            outcome.error = "" if outcome.ok else f"incomplete: {len(text) // 4} tokens"
    except aiohttp.ClientError as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
    finally:
        outcome.ended = time.monotonic()
    return outcome


async def kill_during_streams(
    f: Fleet, victim: str, clients: int, after_kill: float, tokens: int = 50
) -> tuple[list[Outcome], float]:
    """``clients`` loops of streamed chats; SIGKILL ``victim`` mid-stream; go on a while."""
    outcomes: list[Outcome] = []
    stop = asyncio.Event()

    async def looping(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            outcome = Outcome(time.monotonic())
            outcomes.append(outcome)
            await stream_once(session, f.url, tokens, outcome)

    async def killer() -> float:
        # Kill while the victim has a stream that began under 200 ms ago (it lasts
        # about a second), so that stream is certainly cut mid-way.
        while True:
            now = time.monotonic()
            fresh = [
                o
                for o in outcomes
                if o.served_by == victim and o.first_byte and o.ended is None
                if now - o.first_byte < 0.2
            ]
            if fresh and len(outcomes) > 2 * clients:
                break
            await asyncio.sleep(0.01)
        f.kill(victim)
        killed = time.monotonic()
        await asyncio.sleep(after_kill)
        stop.set()
        return killed

    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        killed, *_ = await asyncio.gather(killer(), *(looping(session) for _ in range(clients)))
    return outcomes, killed
