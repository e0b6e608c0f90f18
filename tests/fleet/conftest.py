"""The fleet tests need Debian's haproxy (`apt-get install haproxy`; .ci/run installs it)."""

from __future__ import annotations

import os

import pytest

from tests.fleet.harness import HAPROXY


@pytest.fixture(autouse=True)
def _haproxy_installed() -> None:
    if not os.access(HAPROXY, os.X_OK):
        pytest.fail(f"{HAPROXY} is missing: apt-get install haproxy")
