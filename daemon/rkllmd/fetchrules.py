"""Which image URLs the daemon may fetch for a client: the owner's ``vision.fetch_urls``.

An entry is one of

- ``host`` (a name, an IPv4 address or a bracketed IPv6 address): that host over
  http on port 80 and https on port 443;
- ``host:port``: that host and port, over http or https;
- ``http://host[:port]/path`` or ``https://...``: URLs of that scheme, host and port
  whose path is the entry's path or lies below it (``/pics`` allows ``/pics`` and
  ``/pics/cat.png``, never ``/pictures``).

Host names match exactly (case-insensitive, a trailing dot ignored): there are no
wildcards and no subdomains. The name is what is checked, not the address it
resolves to: allowing a name trusts whoever controls its DNS, so list only hosts
you trust. The same rules are checked again on every redirect.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from yarl import URL

SCHEMES = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Percent-encoded '.', '/' and '\\' in a path: a server may decode them into a path
# that leaves an allowed prefix, so a prefix rule refuses them.
_ENCODED_PATH_TRICKS = re.compile(r"%(2e|2f|5c)", re.IGNORECASE)


@dataclass(frozen=True)
class UrlRule:
    host: str
    port: int | None  # None: the scheme's default port
    scheme: str | None = None  # None: http or https
    path: str | None = None  # None: any path

    @classmethod
    def parse(cls, entry: str) -> UrlRule:
        """One ``fetch_urls`` entry; ``ValueError`` with a reason if it is not one."""
        text = entry.strip()
        if not text:
            raise ValueError("an empty entry")
        if "://" in text:
            url = _url(text)
            if url.scheme not in SCHEMES:
                raise ValueError(f"{entry!r}: only http:// and https:// prefixes are allowed")
            if url.user is not None or url.query_string or url.fragment:
                raise ValueError(f"{entry!r}: a prefix has no user, query or fragment")
            assert url.port is not None  # http(s) always has one
            return cls(_host(url), url.port, url.scheme, url.path.rstrip("/") or "/")
        url = _url("http://" + text)
        if url.user is not None or url.raw_path not in ("", "/") or url.query_string:
            raise ValueError(f"{entry!r}: give a host, host:port or an http(s):// URL prefix")
        return cls(_host(url), url.explicit_port)

    def allows(self, url: URL) -> bool:
        if url.scheme not in SCHEMES or _host(url) != self.host:
            return False
        if self.scheme is not None and url.scheme != self.scheme:
            return False
        port = self.port if self.port is not None else _DEFAULT_PORTS[url.scheme]
        if url.port != port:
            return False
        if self.path is None or self.path == "/":
            return True
        if _ENCODED_PATH_TRICKS.search(url.raw_path):
            return False
        return url.path == self.path or url.path.startswith(self.path + "/")


def parse_rules(entries: tuple[str, ...]) -> tuple[UrlRule, ...]:
    return tuple(UrlRule.parse(entry) for entry in entries)


def allowed(url: URL, rules: tuple[UrlRule, ...]) -> bool:
    return any(rule.allows(url) for rule in rules)


def origin(url: URL) -> tuple[str, str, int | None]:
    """(scheme, host, port): a redirect may only stay within it."""
    return url.scheme, _host(url), url.port


def _url(text: str) -> URL:
    try:
        url = URL(text)
    except (ValueError, TypeError) as failure:
        raise ValueError(f"{text!r} is not a URL ({failure})") from None
    if not url.host:
        raise ValueError(f"{text!r} has no host")
    return url


def _host(url: URL) -> str:
    return (url.host or "").lower().rstrip(".")
