"""What every request passes through: security checks, body reading, errors.

Order: Host check (DNS rebinding) -> CORS/CSRF origin rules -> API key ->
handler. Bodies are read with a size limit and a timeout and validated into a
pydantic model before the handler does anything else.
"""

from __future__ import annotations

import asyncio
import enum
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import BaseModel, ValidationError

from .. import errors as e
from ..config import HttpSection, is_loopback, parse_listen
from ..untrusted import TooDeep, load_json
from .errors import error_response, ollama_error_response

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)

PUBLIC_PATHS = frozenset({"/health", "/v1/health", "/.well-known/serviceinfo"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


@dataclass(frozen=True, slots=True)
class HostRule:
    """The Host headers one ``http`` section accepts (DNS-rebinding guard).

    On a loopback bind only loopback names (or configured ones) may be used;
    ``names`` is None when the bind is not loopback and any Host goes.
    """

    names: frozenset[str] | None

    @classmethod
    def of(cls, http: HttpSection) -> HostRule:
        bind_host, _ = parse_listen(http.listen)
        if not is_loopback(bind_host):
            return cls(None)
        return cls(LOOPBACK_NAMES | frozenset(h.lower() for h in http.allowed_hosts))

    def allows(self, host_header: str | None) -> bool:
        if self.names is None:
            return True
        if not host_header:
            return False
        host = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
        host = host.lower()
        return host in self.names or host.endswith(".localhost")


class HostRules:
    """The HostRule of the configuration in force: worked out when the app is built,
    and again only when a reload (SIGHUP) has put a new configuration in place."""

    def __init__(self, http: HttpSection) -> None:
        self._http = http
        self._rule = HostRule.of(http)

    def allows(self, host_header: str | None, http: HttpSection) -> bool:
        if http is not self._http:
            self._http, self._rule = http, HostRule.of(http)
        return self._rule.allows(host_header)


class Access(enum.StrEnum):
    """What the request's key lets it do (TabbyAPI's permission names)."""

    ADMIN = "admin"  # everything, management included
    API = "api"  # the API, not management
    NONE = "none"  # no valid key


def _supplied_keys(request: web.Request) -> list[str]:
    """Every key the request offers: TabbyAPI's two headers and a bearer token."""
    keys = [request.headers.get(h, "") for h in ("X-Admin-Key", "X-Api-Key")]
    authorization = request.headers.get("Authorization", "")
    if authorization[:7].lower() == "bearer ":
        keys.append(authorization[7:].strip())
    return [k for k in keys if k]


def _matches(supplied: list[str], key: str | None) -> bool:
    if not key:
        return False
    # Every candidate is compared (no early exit): timing says nothing about which.
    results = [hmac.compare_digest(k.encode(), key.encode()) for k in supplied]
    return any(results)


def key_access(request: web.Request, http: HttpSection) -> Access:
    """The access the request's key grants. Without any key configured everyone is
    an admin; without an admin key the API key manages; without an API key the
    API is open to anyone (``API``) and only management needs the admin key."""
    admin_key = http.admin_key or http.api_key
    if not admin_key:
        return Access.ADMIN
    supplied = _supplied_keys(request)
    if _matches(supplied, admin_key):
        return Access.ADMIN
    if _matches(supplied, http.api_key) or not http.api_key:
        return Access.API
    return Access.NONE


def may_load_models(request: web.Request, http: HttpSection) -> bool:
    """Whether a request naming a model that is not resident may have it loaded
    (an implicit load replaces what is resident). Loading is management: with an
    admin key set only that key may, unless ``http.allow_inference_loads``; without
    one, whoever may use the API may load (``key_access`` gives them ADMIN)."""
    return http.allow_inference_loads or key_access(request, http) is Access.ADMIN


def check_auth(request: web.Request, http: HttpSection, admin: bool) -> Access:
    """Refuse a request its key does not allow: 401 without a valid key, 403 for a
    valid API key on a management route. Returns the request's access."""
    if request.path in PUBLIC_PATHS:
        return Access.NONE
    access = key_access(request, http)
    if access is Access.NONE:
        raise e.AuthenticationFailed("missing or invalid API key")
    if admin and access is not Access.ADMIN:
        if not _matches(_supplied_keys(request), http.api_key):
            raise e.AuthenticationFailed("this route needs the admin key")
        raise e.PermissionDenied("the API key may not manage models; use the admin key")
    return access


def check_origin(request: web.Request, http: HttpSection) -> None:
    """Refuse cross-site browser requests: a page may not drive the local daemon."""
    origin = request.headers.get("Origin")
    if (
        origin is not None
        and origin not in http.cors_origins
        and not _same_origin(request, origin, http)
    ):
        raise e.Forbidden("cross-origin requests are not allowed from this origin")
    if request.method == "POST" and _declares_non_json(request):
        raise e.UnsupportedMediaType("request bodies must be application/json")


def _same_origin(request: web.Request, origin: str, http: HttpSection) -> bool:
    """The daemon's own page (the console): browsers send Origin with module scripts
    and POSTs. Same origin counts only where DNS rebinding cannot fake it: the host is
    an IP address, a loopback name or one of ``http.allowed_hosts`` (a rebound page
    comes from a DNS name that the attacker controls)."""
    if urlsplit(origin).netloc.lower() != request.host.lower():
        return False
    host = urlsplit(origin).hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        allowed = LOOPBACK_NAMES | {h.lower() for h in http.allowed_hosts}
        return host in allowed or host.endswith(".localhost")
    return True


# What a web page's form (or a no-cors fetch) can POST cross-site without a preflight.
SIMPLE_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})


def _declares_non_json(request: web.Request) -> bool:
    """A POST whose body is not declared JSON.

    The types a page can send cross-site are refused whatever the length: an empty
    or chunked ``text/plain`` POST must not unload a model. Any other type is refused
    when a body comes (chunked too); an empty POST without a type (``curl -X POST``,
    or aiohttp's ``application/octet-stream``) carries nothing to misread."""
    if request.content_type == "application/json":
        return False
    if request.content_type in SIMPLE_TYPES:
        return True
    return request.body_exists


def cors_headers(request: web.Request, http: HttpSection) -> dict[str, str]:
    origin = request.headers.get("Origin")
    if origin is None or origin not in http.cors_origins:
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Api-Key, X-Admin-Key",
        "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
        "Vary": "Origin",
    }


async def read_body(request: web.Request, model: type[M], http: HttpSection) -> M:
    try:
        async with asyncio.timeout(http.body_timeout_seconds):
            raw = await request.read()
    except TimeoutError:
        raise e.RequestTimeout("the request body did not arrive in time") from None
    except web.HTTPRequestEntityTooLarge:
        raise e.PayloadTooLarge(
            f"the request body is larger than {http.max_body_bytes} bytes"
        ) from None
    try:
        data = load_json(raw or b"{}")
    except TooDeep as exc:
        raise e.InvalidParams(f"the request body is {exc}") from None
    except ValueError:  # not JSON, not UTF-8
        raise e.InvalidParams("the request body is not valid JSON") from None
    return parse_model(model, data)


def parse_model(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise e.InvalidParams(
            f"{where}: {first['msg']}" if where else first["msg"], param=where
        ) from None


OLLAMA_PREFIX = "/api/"


def to_error_response(error: e.RkllmdError, path: str = "") -> web.Response:
    """The error in the shape the route's dialect uses: Ollama's under /api/, else OpenAI's."""
    if path.startswith(OLLAMA_PREFIX):
        return ollama_error_response(error)
    return error_response(error, error.details.get("param"))
