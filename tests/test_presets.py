"""Sampler override presets: parsing, validation, and how they meet a request."""

from __future__ import annotations

from pathlib import Path

import pytest
from rkllmd.config import Config, LiveConfig
from rkllmd.errors import InvalidParams
from rkllmd.presets import SamplerPresets, parse_overrides
from rkllmd.requests import Sampling


def _presets(folder: Path, **sampling: object) -> SamplerPresets:
    config = Config.model_validate({"sampling": {"presets_dir": folder, **sampling}})
    return SamplerPresets(LiveConfig(config))


def test_override_applies_when_the_request_did_not_set_it_and_force_always(tmp_path) -> None:  # type: ignore[no-untyped-def]
    presets = _presets(tmp_path)
    presets.set_inline(
        {
            "temperature": {"override": 0.3},
            "top_k": {"override": 7, "force": True},
            "stop": {"override": ["###"], "additive": True},
        }
    )
    untouched = presets.apply(Sampling())
    assert (untouched.temperature, untouched.top_k, untouched.stop) == (0.3, 7, ("###",))
    given = Sampling(
        temperature=1.2, top_k=50, stop=("END",), given=("stop", "temperature", "top_k")
    )
    applied = presets.apply(given)
    assert (applied.temperature, applied.top_k, applied.stop) == (1.2, 7, ("###", "END"))


def test_files_in_toml_and_yaml(tmp_path: Path) -> None:
    (tmp_path / "calm.toml").write_text("temperature = { override = 0.2, force = true }\n")
    (tmp_path / "short.yml").write_text(
        "max_tokens:\n  override: 16\nrepetition_penalty:\n  override: 1.1\n"
    )
    (tmp_path / "notes.txt").write_text("ignored")
    presets = _presets(tmp_path)
    assert presets.names() == ["calm", "short"]
    presets.switch("short")
    applied = presets.apply(Sampling())
    assert applied.max_tokens == 16 and applied.repeat_penalty == 1.1  # TabbyAPI's name mapped
    assert presets.to_wire()["selected_preset"] == "short"
    presets.switch("calm")
    assert presets.apply(Sampling(temperature=1.0, given=("temperature",))).temperature == 0.2
    with pytest.raises(InvalidParams) as unknown:
        presets.switch("nope")
    assert unknown.value.code == "unknown_preset" and unknown.value.details["available"] == [
        "calm",
        "short",
    ]


@pytest.mark.parametrize(
    "data",
    [
        {"temperature": {"override": 9}},  # out of the request field's range
        {"temperature": 0.5},  # not {override: ...}
        {"mirostat": {"override": 1}},  # not a field here
        {"top_k": {"override": 5, "additive": True}},  # only stop adds
        {"top_k": {"override": 5, "force": "yes"}},
        ["temperature"],
    ],
)
def test_bad_overrides_are_refused(data: object) -> None:
    with pytest.raises(InvalidParams):
        parse_overrides(data)


def test_the_configured_preset_is_in_force_and_follows_reloads(tmp_path: Path) -> None:
    (tmp_path / "calm.toml").write_text("temperature = { override = 0.2 }\n")
    live = LiveConfig(
        Config.model_validate({"sampling": {"presets_dir": tmp_path, "preset": "calm"}})
    )
    presets = SamplerPresets(live)
    assert presets.config_changed()
    presets.follow_config()
    assert presets.selected == "calm" and not presets.config_changed()
    live.replace(Config.model_validate({"sampling": {"presets_dir": tmp_path}}))
    presets.follow_config()
    assert presets.selected is None and presets.apply(Sampling()).temperature == 0.8
