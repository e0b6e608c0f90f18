"""Composition root and lifecycle of rkllmd.

start: scan models -> bind control socket + HTTP -> watcher + watchdog -> optional
       initial load (EXTEND_TIMEOUT while it runs) -> READY=1
run:   SIGHUP reloads config and rescans; STATUS follows the manager's state
stop:  SIGTERM/SIGINT -> STOPPING=1 -> stop accepting -> drain with a deadline
       -> stop the worker -> close connections -> exit 0
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .catalog.registry import ModelRegistry
from .config import Config, LiveConfig, load_config, with_listen
from .errors import RkllmdError
from .http.app import build_app
from .http.server import HttpServer
from .http.services import Services
from .manager import ModelManager
from .rpc.dispatch import Dispatcher
from .rpc.methods import build_methods
from .rpc.server import ControlServer
from .store import ModelStore
from .systemd.activation import inherited_sockets
from .systemd.notify import Notifier

logger = logging.getLogger(__name__)

MAX_BATCH = 100
STUCK_CHECK_SECONDS = 5.0
# Not an RKLLMD_* name: config rejects unknown ones, and this is no setting.
TEST_BLOCK_ENV = "_RKLLMD_TEST_BLOCK_LOOP_SECONDS"


@dataclass(frozen=True, slots=True)
class Running:
    """What a successful start brought up, for the orderly stop."""

    registry: ModelRegistry
    manager: ModelManager
    store: ModelStore
    control: ControlServer
    http: HttpServer | None


class Daemon:
    def __init__(self, config: Config, cli: Mapping[str, Any]) -> None:
        self.live = LiveConfig(config)
        self._cli = dict(cli)
        self._notifier = Notifier()
        self._stop = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        self._listen_override: str | None = None

    @property
    def config(self) -> Config:
        return self.live.current

    async def run(self) -> int:
        self._install_stop_signals()  # first: a SIGTERM during start-up still cleans up
        async with contextlib.AsyncExitStack() as undo:
            parts = await self._start(undo)
            # Started: the orderly stop below replaces the undo steps of a failed start.
            undo.pop_all()
        self._notifier.ready(self._status_line(parts.manager))
        logger.info(
            "ready; control socket %s, %d models in %s",
            parts.control.path,
            len(parts.registry.entries()),
            self.config.models_dir,
        )

        await self._stop.wait()

        self._notifier.stopping()
        logger.info("stopping: draining for up to %.0f s", self.config.drain_seconds)
        await parts.control.stop_accepting()
        if parts.http is not None:
            await parts.http.stop_accepting()
        await parts.store.close(self.config.drain_seconds)  # cancels pulls; parts resumable
        await parts.manager.shutdown(self.config.drain_seconds)
        await parts.control.close()
        if parts.http is not None:
            await parts.http.close()
        await self._cancel_background()
        logger.info("stopped")
        return 0

    async def _start(self, undo: contextlib.AsyncExitStack) -> Running:
        """Bring everything up; each step registers in ``undo`` how to take it down
        again, so a start that fails half-way (a taken HTTP port, another daemon on
        the socket) leaves no socket file, folder, worker or task behind."""
        cfg = self.config
        registry = ModelRegistry(
            cfg.models_dir,
            settle_seconds=cfg.models.settle_seconds,
            rescan_interval=cfg.models.rescan_interval,
        )
        await registry.scan()
        manager = ModelManager(self.live, registry)
        undo.push_async_callback(manager.shutdown, 0.0)
        store = ModelStore(cfg.models_dir, registry, manager, self.live)
        await store.start()  # removes orphaned pull staging
        undo.push_async_callback(store.close, 0.0)
        methods = build_methods(manager, registry, self.live, store)
        control = ControlServer(
            cfg.control_socket(),
            Dispatcher(methods, max_batch=MAX_BATCH),
            group=cfg.socket_group,
            limits=lambda: self.config.control,
        )
        inherited = inherited_sockets()
        await control.start(inherited.get("control"))
        undo.push_async_callback(control.close)
        http = await self._start_http(
            Services(manager, registry, self.live, store), inherited.get("http")
        )
        if http is not None:
            undo.push_async_callback(http.close)
        self._install_signals(manager, registry)
        undo.push_async_callback(self._cancel_background)
        self._spawn(registry.watch(self._stop))
        self._spawn(self._watchdog(manager))
        manager.on_change = lambda: self._notifier.status(self._status_line(manager))
        if not self._stop.is_set():  # no load for a daemon already told to stop
            await self._initial_load(manager, registry)
        return Running(registry, manager, store, control, http)

    async def _start_http(
        self, services: Services, inherited: socket.socket | None
    ) -> HttpServer | None:
        if not self.config.http.enabled and inherited is None:
            return None
        if inherited is not None:
            # The safety rules (loopback-only without a key, Host checks) must see
            # the address systemd actually bound, not the config's listen value.
            self._listen_override = _address_of(inherited)
            self.live.replace(with_listen(self.config, self._listen_override))
        app = build_app(services)
        server = HttpServer(app, self.config.http, inherited)
        await server.start()
        return server

    async def _initial_load(self, manager: ModelManager, registry: ModelRegistry) -> None:
        if not self.config.load:
            return
        self._notifier.extend_timeout(self.config.worker.load_timeout_seconds + 10)
        await registry.wait_settled(self.config.models.settle_seconds + 5)
        try:
            await manager.load(self.config.load)
        except RkllmdError as exc:
            # Stay up: the owner can fix the model and load again over the socket.
            logger.error("could not load %r at start: %s", self.config.load, exc.message)

    def _install_stop_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)

    def _install_signals(self, manager: ModelManager, registry: ModelRegistry) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self._reload(manager, registry)))
        block = os.environ.get(TEST_BLOCK_ENV)
        if block:  # test hook: SIGUSR2 wedges the event loop (watchdog tests only)
            loop.add_signal_handler(signal.SIGUSR2, time.sleep, float(block))
        # Their default action ends the process, and log rotation scripts and admins
        # send them to daemons out of habit: answer with the status line instead.
        for sig in (signal.SIGUSR1, signal.SIGUSR2):
            if signal.getsignal(sig) is signal.SIG_DFL:  # not the memory trace's, nor the hook
                loop.add_signal_handler(sig, self._log_status, sig, manager)

    async def _reload(self, manager: ModelManager, registry: ModelRegistry) -> None:
        """SIGHUP. Whatever happens, ``READY=1`` follows ``RELOADING=1``: a reload that
        fails must not leave systemd showing the unit as "reloading" for good."""
        self._notifier.reloading()
        try:
            await self._apply_reload(registry)
        except Exception as exc:  # a bug: still one line, and the old config stays
            logger.error("reload failed, keeping the running configuration: %r", exc)
        finally:
            self._notifier.reloaded(self._status_line(manager))

    async def _apply_reload(self, registry: ModelRegistry) -> None:
        try:
            config = await asyncio.to_thread(load_config, self._cli)
            if self._listen_override:
                config = with_listen(config, self._listen_override)
        except RkllmdError as exc:
            logger.error("reload failed, keeping the running configuration: %s", exc.message)
            await registry.scan()
            return
        if (
            config.models_dir != self.config.models_dir
            or config.control_socket() != self.config.control_socket()
        ):
            logger.warning("models_dir and socket changes take effect after a restart")
        self.live.replace(config)
        logging.getLogger().setLevel(config.log_level.upper())
        await registry.scan()
        logger.info("configuration reloaded; %d models", len(registry.entries()))

    async def _watchdog(self, manager: ModelManager) -> None:
        interval = Notifier.watchdog_interval()
        period = min(interval, STUCK_CHECK_SECONDS) if interval else STUCK_CHECK_SECONDS
        while True:
            # Runs on the loop: if the loop is wedged, pings stop and systemd acts.
            manager.check_stuck()
            if interval:
                self._notifier.watchdog()
            await asyncio.sleep(period)

    def _log_status(self, sig: signal.Signals, manager: ModelManager) -> None:
        logger.info("%s: %s", sig.name, self._status_line(manager))

    @staticmethod
    def _status_line(manager: ModelManager) -> str:
        st = manager.status()
        model = f" {st.model}" if st.model else ""
        return f"{st.state.value}{model}; queue {st.queue.waiting}/{st.queue.max}"

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _cancel_background(self) -> None:
        for task in list(self._background):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._background, return_exceptions=True)


def _address_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
