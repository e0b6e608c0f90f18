"""Sampler override presets (TabbyAPI's "sampler overrides"), for every generation.

A preset is a TOML (``*.toml``) or YAML (``*.yml``, ``*.yaml``) file in
``sampling.presets_dir`` mapping sampling fields to an override::

    temperature = { override = 0.6 }             # when a request does not set it
    top_k = { override = 20, force = true }       # always, whatever the request says
    stop = { override = ["###"], additive = true } # added to the request's stops

``override`` applies when the request did not set the field; ``force`` applies it
even when it did; ``additive`` (``stop`` only) adds the values to the request's. The
active overrides (one preset, or a set given inline) apply to every dialect: the
manager applies them to each generation. ``sampling.preset`` in the config picks the
preset active from start (and after a reload that changes it).

Values are validated with the same ranges as request fields; an unknown field is
refused, not ignored. Files are read off the event loop by the callers.
"""

from __future__ import annotations

import dataclasses
import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .config import LiveConfig
from .errors import InvalidParams, UnknownPreset
from .requests import Sampling
from .wire import SamplingFields

logger = logging.getLogger(__name__)

SUFFIXES = (".toml", ".yml", ".yaml")
MAX_PRESET_BYTES = 256 * 1024
# TabbyAPI's names for the same knobs.
ALIASES = {"repetition_penalty": "repeat_penalty", "ban_eos_token": "ignore_eos"}
# Token ids and grammars belong to one request and one model, not to a preset.
PER_REQUEST = {"given", "logit_bias", "grammar"}
FIELDS = frozenset(f.name for f in dataclasses.fields(Sampling)) - PER_REQUEST


@dataclass(frozen=True, slots=True)
class Override:
    value: Any
    force: bool = False
    additive: bool = False

    def to_wire(self) -> dict[str, Any]:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {"override": value, "force": self.force, "additive": self.additive}


def _check_value(name: str, value: Any) -> Any:
    """The value as a request field of that name would be validated."""
    try:
        fields = SamplingFields.model_validate({name: value})
    except ValidationError as exc:
        problem = exc.errors(include_url=False, include_input=False)[0]["msg"]
        raise InvalidParams(f"sampler override {name}: {problem}", param=name) from None
    checked = getattr(fields, name)
    return tuple([checked] if isinstance(checked, str) else checked) if name == "stop" else checked


def parse_overrides(data: Any) -> dict[str, Override]:
    if not isinstance(data, dict):
        raise InvalidParams("sampler overrides must be a mapping of field names")
    overrides: dict[str, Override] = {}
    for raw_name, spec in data.items():
        name = ALIASES.get(str(raw_name), str(raw_name))
        if name not in FIELDS:
            raise InvalidParams(
                f"unknown sampler override {raw_name!r}; known: {', '.join(sorted(FIELDS))}",
                param=str(raw_name),
            )
        if not isinstance(spec, dict) or spec.get("override") is None:
            raise InvalidParams(
                f"sampler override {raw_name}: expected {{override, force?, additive?}}",
                param=str(raw_name),
            )
        force, additive = spec.get("force", False), spec.get("additive", False)
        if not isinstance(force, bool) or not isinstance(additive, bool):
            raise InvalidParams(f"sampler override {raw_name}: force and additive are booleans")
        if additive and name != "stop":
            raise InvalidParams(f"sampler override {raw_name}: only stop can be additive")
        overrides[name] = Override(_check_value(name, spec["override"]), force, additive)
    return overrides


def _read(path: Path) -> Any:
    with path.open("rb") as handle:
        raw = handle.read(MAX_PRESET_BYTES + 1)
    if len(raw) > MAX_PRESET_BYTES:
        raise InvalidParams(f"the preset {path.stem!r} is larger than {MAX_PRESET_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
        if path.suffix == ".toml":
            return tomllib.loads(text)
        import yaml

        return yaml.safe_load(text)
    except Exception as exc:  # UnicodeDecodeError, TOMLDecodeError, yaml.YAMLError
        raise InvalidParams(f"the preset {path.stem!r} cannot be read: {exc}") from None


class SamplerPresets:
    def __init__(self, config: LiveConfig) -> None:
        self._live = config
        self._selected: str | None = None
        self._overrides: dict[str, Override] = {}
        self._configured: str | None = None  # the config's preset last put in force

    # --- what exists -----------------------------------------------------------------

    def _files(self) -> dict[str, Path]:
        folder = self._live.current.sampling.presets_dir
        try:
            found = {
                p.stem: p
                for p in sorted(folder.iterdir())
                if p.suffix in SUFFIXES and not p.name.startswith(".") and p.is_file()
            }
        except OSError:
            return {}
        return found

    def names(self) -> list[str]:
        return sorted(self._files())

    # --- what is in force ------------------------------------------------------------

    @property
    def selected(self) -> str | None:
        return self._selected

    def to_wire(self) -> dict[str, Any]:
        return {
            "selected_preset": self._selected,
            "overrides": {k: o.to_wire() for k, o in self._overrides.items()},
        }

    def switch(self, name: str) -> None:
        """Put the preset ``name`` in force (blocking: reads a file)."""
        path = self._files().get(name)
        if path is None:
            available = self.names()
            raise UnknownPreset(
                f"unknown sampler preset {name!r}; available: {', '.join(available) or 'none'}",
                param="preset",
                available=available,
            )
        self._overrides, self._selected = parse_overrides(_read(path)), name
        logger.info("sampler preset %s in force", name)

    def set_inline(self, data: dict[str, Any]) -> None:
        self._overrides, self._selected = parse_overrides(data), None

    def clear(self) -> None:
        self._overrides, self._selected = {}, None

    def config_changed(self) -> bool:
        return self._live.current.sampling.preset != self._configured

    def follow_config(self) -> None:
        """Put ``sampling.preset`` in force when it changed since last seen (start,
        reload); a preset switched over HTTP stays until the config changes.
        Blocking (reads a file): called off the event loop."""
        wanted = self._live.current.sampling.preset
        if wanted == self._configured:
            return
        self._configured = wanted
        if wanted is None:
            self.clear()
            return
        try:
            self.switch(wanted)
        except InvalidParams as exc:
            logger.error("sampling.preset: %s", exc.message)

    # --- applying --------------------------------------------------------------------

    def apply(self, sampling: Sampling) -> Sampling:
        if not self._overrides:
            return sampling
        changes: dict[str, Any] = {}
        for name, o in self._overrides.items():
            if o.additive:
                changes[name] = tuple(dict.fromkeys((*o.value, *sampling.stop)))
            elif o.force or name not in sampling.given:
                changes[name] = o.value
        return dataclasses.replace(sampling, **changes)
