"""Load-option defaulting, shared by both backends: request < config < built-in, and 0."""

from __future__ import annotations

import pytest
from rkllmd.backends.base import pick_option


@pytest.mark.parametrize(
    ("requested", "configured", "expected"),
    [(None, None, 4096), (None, 2048, 2048), (1024, 2048, 1024), (1024, None, 1024)],
)
def test_the_first_given_layer_wins(
    requested: int | None, configured: int | None, expected: int
) -> None:
    assert pick_option(requested, configured, 4096) == expected
    assert pick_option(requested, configured, 4096, zero_means=None) == expected


def test_zero_is_a_setting_by_default() -> None:
    # llama.cpp ctx_size: 0 is passed on (the model's training context), from any layer.
    assert pick_option(0, 2048, 4096) == 0
    assert pick_option(None, 0, 4096) == 0


def test_zero_stands_for_the_automatic_value() -> None:
    # llama.cpp threads: 0 is half the cores, whichever layer says it.
    assert pick_option(0, 8, 2, zero_means=2) == 2
    assert pick_option(None, 0, 2, zero_means=2) == 2
    assert pick_option(None, None, 2, zero_means=2) == 2


def test_zero_can_mean_not_given() -> None:
    # RKLLM ctx_size/threads: the runtime has no automatic value, the next layer decides.
    assert pick_option(0, 2048, 4096, zero_means=None) == 2048
    assert pick_option(0, 0, 4096, zero_means=None) == 4096
    assert pick_option(0, None, 4096, zero_means=None) == 4096
