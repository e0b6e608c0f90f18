"""The Host-header rule (DNS-rebinding guard): worked out once per configuration."""

from __future__ import annotations

import pytest
from rkllmd.config import HttpSection
from rkllmd.http.edge import HostRule, HostRules


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost:8080", True),
        ("[::1]:8080", True),
        ("App.Localhost", True),
        ("board.lan:8080", True),
        ("evil.example", False),
        (None, False),
        ("", False),
    ],
)
def test_host_rule_on_loopback(host: str | None, allowed: bool) -> None:
    rule = HostRule.of(HttpSection(allowed_hosts=["board.lan"]))
    assert rule.allows(host) is allowed


def test_host_rule_open_when_bound_beyond_loopback() -> None:
    rule = HostRule.of(HttpSection(listen="0.0.0.0:8080", api_key="k"))
    assert rule.allows("evil.example") and rule.allows(None)


def test_host_rules_follow_a_reloaded_config() -> None:
    first = HttpSection()
    rules = HostRules(first)
    assert not rules.allows("board.lan", first)
    reloaded = HttpSection(allowed_hosts=["board.lan"])
    assert rules.allows("board.lan", reloaded)
    assert not rules.allows("board.lan", first)
