"""The web console: static files shipped in the package (``http/console/``), served
at ``/`` and ``/ui/``.

The files are read and gzipped once when the app is built; every answer carries
an ETag (a conditional GET costs a 304), ``Cache-Control: no-cache`` so a daemon
upgrade shows at once, and a Content-Security-Policy that allows only the
daemon's own scripts, styles and connections. The pages hold no secret: they are
public, and every API call they make needs the key as any other client's does.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from .routing import Handler

CONSOLE_PACKAGE = "rkllmd.http"
CONSOLE_FOLDER = "console"

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
COMPRESSIBLE = frozenset({".html", ".js", ".css", ".svg"})

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    gzipped: bytes | None  # None when compressing does not help
    content_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every console file by its name, read once from the installed package."""
    folder = resources.files(CONSOLE_PACKAGE).joinpath(CONSOLE_FOLDER)
    assets: dict[str, Asset] = {}
    for item in folder.iterdir():
        suffix = "." + item.name.rsplit(".", 1)[-1]
        if not item.is_file() or suffix not in TYPES:
            continue
        body = item.read_bytes()
        packed = gzip.compress(body, 9, mtime=0) if suffix in COMPRESSIBLE else None
        assets[item.name] = Asset(
            body=body,
            gzipped=packed if packed is not None and len(packed) < len(body) else None,
            content_type=TYPES[suffix],
            etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        )
    return assets


def _answer(request: web.Request, asset: Asset) -> web.Response:
    headers = {**SECURITY_HEADERS, "ETag": asset.etag, "Vary": "Accept-Encoding"}
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    body = asset.body
    if asset.gzipped is not None and "gzip" in request.headers.get("Accept-Encoding", ""):
        body, headers["Content-Encoding"] = asset.gzipped, "gzip"
    headers["Content-Type"] = asset.content_type
    return web.Response(body=body, headers=headers)


def console_handlers(assets: dict[str, Asset]) -> tuple[Handler, Handler]:
    """The page (``/`` and ``/ui/``) and its files (``/ui/{name}``)."""

    async def page(request: web.Request) -> web.StreamResponse:
        return _answer(request, assets["index.html"])

    async def asset(request: web.Request) -> web.StreamResponse:
        found = assets.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        return _answer(request, found)

    return page, asset


def add_console(router: web.UrlDispatcher) -> None:
    page, asset = console_handlers(load_assets())
    for handler in (page, asset):
        handler.rkllmd_public = True  # type: ignore[attr-defined]
    router.add_get("/", page)
    router.add_get("/ui", page)
    router.add_get("/ui/", page)
    router.add_get("/ui/{name}", asset)
