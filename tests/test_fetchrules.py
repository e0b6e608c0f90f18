"""The allow-list rule of ``vision.fetch_urls``: which URLs an entry lets through."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rkllmd.config import load_config
from rkllmd.errors import ConfigError
from rkllmd.fetchrules import allowed, origin, parse_rules
from yarl import URL

RULES = parse_rules(
    ("Images.Example.com.", "127.0.0.1:8080", "[::1]:9000", "https://cdn.example.org/pics/")
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://images.example.com/a.png", True),  # a bare host: http on 80
        ("https://IMAGES.example.com./a.png", True),  # https on 443, case and dot ignored
        ("https://images.example.com:8443/a.png", False),  # not its default port
        ("http://sub.images.example.com/a.png", False),  # no subdomains
        ("http://images.example.com.evil.net/a.png", False),
        ("http://127.0.0.1:8080/a.png", True),  # host:port: either scheme
        ("https://127.0.0.1:8080/a.png", True),
        ("http://127.0.0.1/a.png", False),
        ("http://127.0.0.2:8080/a.png", False),
        ("http://[::1]:9000/a.png", True),
        ("https://cdn.example.org/pics/cat.png", True),  # a prefix: that scheme
        ("https://cdn.example.org/pics", True),
        ("http://cdn.example.org/pics/cat.png", False),
        ("https://cdn.example.org/pictures/cat.png", False),  # a segment, not a string
        ("https://cdn.example.org/pics/../secret.png", False),  # normalised first
        ("https://cdn.example.org/pics/..%2Fsecret.png", False),  # encoded tricks
        ("https://cdn.example.org/other/cat.png", False),
        ("ftp://images.example.com/a.png", False),
    ],
)
def test_what_each_entry_allows(url: str, expected: bool) -> None:
    assert allowed(URL(url), RULES) is expected


def test_nothing_is_allowed_by_an_empty_list() -> None:
    assert not allowed(URL("http://127.0.0.1:8080/a.png"), parse_rules(()))


def test_origin_is_scheme_host_and_port() -> None:
    assert origin(URL("http://A.example/x")) == origin(URL("http://a.example:80/y"))
    assert origin(URL("http://a.example/x")) != origin(URL("https://a.example/x"))
    assert origin(URL("http://a.example/x")) != origin(URL("http://a.example:8080/x"))


@pytest.mark.parametrize(
    "entry",
    ["", "ftp://host/", "file:///etc", "https://user:pw@host/", "host/path", "https://h/?q=1"],
)
def test_a_bad_entry_is_a_config_error_naming_the_key(tmp_path: Path, entry: str) -> None:
    path = tmp_path / "rkllmd.toml"
    path.write_text(f"[vision]\nfetch_urls = [{json.dumps(entry)}]\n")
    with pytest.raises(ConfigError) as refused:
        load_config({"config": str(path)}, environ={})
    assert "vision.fetch_urls" in refused.value.message


def test_entries_load_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "rkllmd.toml"
    path.write_text('[vision]\nfetch_urls = ["127.0.0.1:8080", "https://cdn.example.org/p/"]\n')
    config = load_config({"config": str(path)}, environ={})
    assert allowed(URL("http://127.0.0.1:8080/x.png"), parse_rules(config.vision.fetch_urls))
