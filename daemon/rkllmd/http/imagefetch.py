"""Image URLs fetched for a client, only where the owner allows (``vision.fetch_urls``).

With the list empty (the default) nothing is fetched: an http(s) URL stays text and
``images.py`` refuses it like any URL. With hosts listed, an OpenAI ``image_url`` or
Responses ``input_image`` URL on the list is fetched here, at the edge, before the
request is queued and before the first byte of the answer:

- a fresh session per request: no cookies, no proxies from the environment (the
  daemon's own environment is not the client's business), no transparent
  decompression (the byte cap counts what arrives);
- the body is read in pieces and abandoned as soon as it passes
  ``vision.max_image_bytes``, whatever ``Content-Length`` said;
- redirects are followed by hand, only within the same scheme, host and port, with
  the allow-list checked again on every hop, at most ``vision.fetch_max_redirects``;
- one deadline, ``vision.fetch_timeout_seconds``, covers an image's hops.

The bytes then go through the same checks as base64 images (``images.decode_image``).
Whose fault a failure is decides the answer: the client's URL (not allowed, a 4xx,
a redirect elsewhere, too large) is ``InvalidImage`` (400); the image server failing
(5xx, unreachable) is ``ImageFetchFailed`` (502), too slow ``ImageFetchTimeout`` (504).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import aiohttp
from yarl import URL

from ..config import VisionSection
from ..errors import ImageFetchFailed, ImageFetchTimeout, InvalidImage
from ..fetchrules import UrlRule, allowed, origin, parse_rules

logger = logging.getLogger(__name__)

MAX_URL_LENGTH = 8192
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HEADERS = {
    "Accept": "image/jpeg, image/png, image/webp",
    "Accept-Encoding": "identity",
    "User-Agent": "rkllmd",
}


async def fetch_images(texts: Sequence[str], limits: VisionSection) -> list[str | bytes]:
    """``texts`` as sent, with each http(s) URL replaced by the bytes fetched from it
    when fetching is on; everything else (data URLs, base64, other schemes) untouched."""
    wanted = [i for i, text in enumerate(texts) if limits.fetch_urls and _is_http(text)]
    out: list[str | bytes] = list(texts)
    if not wanted:
        return out
    rules = parse_rules(limits.fetch_urls)
    async with _session(limits) as session:
        for index in wanted:
            out[index] = await fetch_image(session, texts[index], rules, limits, index)
    return out


async def fetch_image(
    session: aiohttp.ClientSession,
    text: str,
    rules: tuple[UrlRule, ...],
    limits: VisionSection,
    index: int = 0,
) -> bytes:
    where = f"image {index}"
    url = _parse(text.strip(), where)
    try:
        async with asyncio.timeout(limits.fetch_timeout_seconds):
            return await _follow(session, url, rules, limits, where)
    except TimeoutError:
        raise ImageFetchTimeout(
            f"{where}: {url.host} did not send the image within {limits.fetch_timeout_seconds:g} s",
            **_about(url),
            timeout_seconds=limits.fetch_timeout_seconds,
        ) from None
    except aiohttp.ClientError as failure:
        raise ImageFetchFailed(
            f"{where}: fetching from {url.host} failed ({_reason(failure)})", **_about(url)
        ) from None


def _session(limits: VisionSection) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=limits.fetch_timeout_seconds),
        connector=aiohttp.TCPConnector(limit=2),
    )


async def _follow(
    session: aiohttp.ClientSession,
    url: URL,
    rules: tuple[UrlRule, ...],
    limits: VisionSection,
    where: str,
) -> bytes:
    for hop in range(limits.fetch_max_redirects + 1):
        if not allowed(url, rules):
            raise InvalidImage(
                f"{where}: {url.scheme}://{url.host}:{url.port} is not among the image "
                "URLs this daemon may fetch (vision.fetch_urls)",
                **_about(url),
                reason="redirect_not_allowed" if hop else "host_not_allowed",
            )
        async with session.get(url, allow_redirects=False, headers=_HEADERS) as response:
            location = response.headers.get("Location")
            if response.status in _REDIRECTS and location:
                url = _next_hop(url, location, where)
                continue
            _check_status(response.status, url, where)
            data = await _body(response, limits.max_image_bytes, url, where)
            logger.debug("%s: %d bytes from %s:%s", where, len(data), url.host, url.port)
            return data
    raise InvalidImage(
        f"{where}: more than {limits.fetch_max_redirects} redirects",
        **_about(url),
        reason="too_many_redirects",
        limit=limits.fetch_max_redirects,
    )


def _next_hop(url: URL, location: str, where: str) -> URL:
    try:
        target = url.join(URL(location))
    except (ValueError, TypeError):
        raise InvalidImage(
            f"{where}: {url.host} redirected to an unusable location",
            **_about(url),
            reason="bad_redirect",
        ) from None
    if origin(target) != origin(url):
        raise InvalidImage(
            f"{where}: {url.host} redirected to another host or scheme "
            f"({target.scheme}://{target.host}); only redirects within the same "
            "scheme, host and port are followed",
            **_about(url),
            reason="redirect_to_another_host",
            redirect_host=target.host,
        )
    return target


def _check_status(status: int, url: URL, where: str) -> None:
    if 200 <= status < 300:
        return
    message = f"{where}: {url.host} answered HTTP {status}"
    if 300 <= status < 500:  # the URL names nothing fetchable: the client's to fix
        raise InvalidImage(message, **_about(url), reason="upstream_status", upstream_status=status)
    raise ImageFetchFailed(message, **_about(url), upstream_status=status)


async def _body(response: aiohttp.ClientResponse, limit: int, url: URL, where: str) -> bytes:
    def too_large() -> InvalidImage:
        return InvalidImage(
            f"{where} is larger than {limit} bytes", **_about(url), reason="too_large", limit=limit
        )

    declared = response.content_length
    if declared is not None and declared > limit:
        raise too_large()
    data = bytearray()
    async for piece in response.content.iter_any():
        data += piece
        if len(data) > limit:  # Content-Length may be absent, or wrong
            raise too_large()
    return bytes(data)


def _is_http(text: str) -> bool:
    return isinstance(text, str) and text.lstrip()[:8].lower().startswith(("http://", "https://"))


def _parse(text: str, where: str) -> URL:
    scheme = text.partition(":")[0].lower()
    if len(text) > MAX_URL_LENGTH:
        raise InvalidImage(
            f"{where}: the URL is longer than {MAX_URL_LENGTH} characters",
            url_scheme=scheme,
            reason="bad_url",
        )
    try:
        url = URL(text)
    except (ValueError, TypeError):
        url = None
    if url is None or not url.host or url.port is None:
        raise InvalidImage(
            f"{where} is not a valid {scheme} URL", url_scheme=scheme, reason="bad_url"
        )
    if url.user is not None:
        raise InvalidImage(
            f"{where}: image URLs with credentials are not fetched",
            url_scheme=scheme,
            reason="bad_url",
        )
    return url.with_fragment(None)


def _about(url: URL) -> dict[str, Any]:
    return {"url_scheme": url.scheme, "host": url.host, "port": url.port}


def _reason(failure: aiohttp.ClientError) -> str:
    if isinstance(failure, aiohttp.ClientConnectorError):
        return "could not connect"
    if isinstance(failure, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(failure, aiohttp.ClientPayloadError):
        return "the body was cut short"
    return "the transfer failed"
