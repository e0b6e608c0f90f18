"""Running the HTTP app: bind (or adopt an activated socket), stop, clean up."""

from __future__ import annotations

import logging
import socket

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..config import HttpSection, parse_listen

logger = logging.getLogger(__name__)


class _QuietMalformedRequests(logging.Filter):
    """Malformed HTTP (bad headers, overlong URLs) is the client's fault: one debug line,
    not an ERROR with a traceback that any client could use to flood the journal."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and record.levelno > logging.DEBUG:
            logger.debug("refused a malformed HTTP request: %s", exc)
            return False
        return True


class HttpServer:
    def __init__(
        self, app: web.Application, http: HttpSection, inherited: socket.socket | None
    ) -> None:
        self._runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            keepalive_timeout=http.keepalive_seconds,
            # A client that goes away cancels its handler, which aborts its generation.
            handler_cancellation=True,
            shutdown_timeout=2.0,
            # After an early answer (408, 413) aiohttp reads on to drain the body for
            # lingering_time (default 10 s); a dripping client need not get that long.
            lingering_time=1.0,
        )
        self._http = http
        self._inherited = inherited
        self._quiet = _QuietMalformedRequests()
        logging.getLogger("aiohttp.server").addFilter(self._quiet)
        self._site: web.BaseSite | None = None

    async def start(self) -> str:
        await self._runner.setup()
        if self._inherited is not None:
            self._site = web.SockSite(self._runner, self._inherited)
        else:
            host, port = parse_listen(self._http.listen)
            self._site = web.TCPSite(self._runner, host, port, reuse_address=True, backlog=256)
        await self._site.start()
        logger.info("HTTP API listening on %s", self._site.name)
        return self._site.name

    async def stop_accepting(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def close(self) -> None:
        await self._runner.cleanup()
        logging.getLogger("aiohttp.server").removeFilter(self._quiet)
