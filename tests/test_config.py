"""Config: layering (defaults < file < env < CLI), validation messages, socket rules,
and the shipped etc/rkllmd.toml staying in step with the code."""

from __future__ import annotations

import os
import re
import tomllib
import warnings
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from rkllmd import config as config_module
from rkllmd.config import DEFAULT_MODELS_DIR, Config, default_socket_path, load_config
from rkllmd.errors import ConfigError

with warnings.catch_warnings():
    # rkllmd.__main__ imports jsonrpcserver, which uses deprecated importlib.resources calls.
    warnings.simplefilter("ignore", DeprecationWarning)
    from rkllmd.__main__ import parse_args

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "etc" / "rkllmd.toml"
NO_FILE: dict[str, str] = {"RKLLMD_CONFIG": "/dev/null"}  # an empty TOML document


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rkllmd.toml"
    path.write_text(text)
    return path


def refused(cli: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(cli, environ=NO_FILE if environ is None else environ)
    return err.value.message


# --- the shipped file ------------------------------------------------------------------


def test_shipped_file_equals_the_defaults() -> None:
    loaded = load_config({"config": str(SHIPPED)}, environ={})
    assert loaded.config_file == SHIPPED
    assert loaded.model_copy(update={"config_file": None}) == Config()
    assert loaded.models_dir == DEFAULT_MODELS_DIR == Path("/var/lib/rkllmd/models")
    assert loaded.socket is None  # the default rule decides, not the file


def _option_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            paths += _option_paths(kind, f"{prefix}{name}.")
        else:
            paths.append(prefix + name)
    return paths


def _documented_paths(text: str) -> set[str]:
    """Keys set in the file plus keys shown commented out (`# key = ...`), by section."""
    found: set[str] = set()
    section = ""
    for line in text.splitlines():
        if header := re.fullmatch(r"\[([a-z_.]+)\]\s*", line):
            section = header.group(1) + "."
        elif key := re.match(r"(?:#\s?)?([a-z_]+)\s*=\s*\S", line):
            found.add(section + key.group(1))
    return found


def test_shipped_file_documents_every_option() -> None:
    text = SHIPPED.read_text()
    options = set(_option_paths(Config)) - {"config_file"}  # set by the loader, not a knob
    missing = options - _documented_paths(text)
    assert not missing, f"etc/rkllmd.toml does not mention: {sorted(missing)}"
    # Each option line has a comment saying what it does somewhere in its block.
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if re.match(r"[a-z_]+\s*=", line):
            assert lines[index - 1].startswith("#"), f"option without a comment: {line!r}"


def test_shipped_file_leaves_socket_and_optional_keys_unset() -> None:
    data = tomllib.loads(SHIPPED.read_text())
    assert "socket" not in data and "load" not in data
    assert "api_key" not in data["http"] and "token" not in data["hub"]


# --- precedence ----------------------------------------------------------------------


def test_defaults_without_any_file(tmp_path: Path) -> None:
    config = load_config({}, environ={"RKLLMD_CONFIG": str(write(tmp_path, ""))})
    assert config.queue.max_waiting == 8 and config.log_level == "info"


def test_file_beats_defaults_env_beats_file_cli_beats_env(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'log_level = "warning"\nmodels_dir = "/srv/file"\n[queue]\nmax_waiting = 3\n'
        '[http]\nlisten = "127.0.0.1:9001"\n',
    )
    only_file = load_config({"config": str(path)}, environ={})
    assert only_file.log_level == "warning"
    assert only_file.models_dir == Path("/srv/file")
    assert only_file.queue.max_waiting == 3
    assert only_file.config_file == path

    env = {"RKLLMD_LOG_LEVEL": "error", "RKLLMD_MODELS_DIR": "/srv/env"}
    with_env = load_config({"config": str(path)}, environ=env)
    assert (with_env.log_level, with_env.models_dir) == ("error", Path("/srv/env"))
    assert with_env.queue.max_waiting == 3  # untouched by the env layer

    cli = parse_args(["--config", str(path), "--models-dir", "/srv/cli", "--listen", "[::1]:9002"])
    everything = load_config(cli, environ=env)
    assert everything.models_dir == Path("/srv/cli")
    assert everything.log_level == "error"
    assert everything.http.listen == "[::1]:9002"


def test_config_file_from_env(tmp_path: Path) -> None:
    path = write(tmp_path, "drain_seconds = 2.5\n")
    assert load_config({}, environ={"RKLLMD_CONFIG": str(path)}).drain_seconds == 2.5


def test_nested_env_keys_merge_with_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[worker]\nunload_grace_seconds = 7.0\nabort_grace_seconds = 9.0\n")
    env = {
        "RKLLMD_CONFIG": str(path),
        "RKLLMD_WORKER__ABORT_GRACE_SECONDS": "1.5",
        "RKLLMD_QUEUE__MAX_WAITING": "16",
        "RKLLMD_GENERATION__LOAD_ON_REQUEST": "false",
        "OTHER_QUEUE__MAX_WAITING": "99",
    }
    config = load_config({}, environ=env)
    assert config.worker.abort_grace_seconds == 1.5
    assert config.worker.unload_grace_seconds == 7.0  # the file's sibling key survives
    assert config.queue.max_waiting == 16
    assert config.generation.load_on_request is False


def test_cli_only_overrides_given_options(tmp_path: Path) -> None:
    path = write(tmp_path, 'load = "from-file"\nlog_level = "debug"\n')
    config = load_config(parse_args(["--config", str(path), "--load", "smollm2"]), environ={})
    assert config.load == "smollm2" and config.log_level == "debug"


# --- HF_ENDPOINT -----------------------------------------------------------------------

MIRROR = "https://hf-mirror.example.org"


def test_hf_endpoint_replaces_the_built_in_hub() -> None:
    assert load_config({}, environ=NO_FILE).hub.endpoint == "https://huggingface.co"
    config = load_config({}, environ={**NO_FILE, "HF_ENDPOINT": MIRROR + "/"})
    assert config.hub.endpoint == MIRROR


def test_hf_endpoint_applies_with_the_shipped_file() -> None:
    config = load_config({"config": str(SHIPPED)}, environ={"HF_ENDPOINT": MIRROR})
    assert config.hub.endpoint == MIRROR
    assert config.hub.retries == Config().hub.retries  # the file's other hub keys still apply


def test_file_and_rkllmd_env_win_over_hf_endpoint(tmp_path: Path) -> None:
    path = write(tmp_path, '[hub]\nendpoint = "http://file.example"\nretries = 2\n')
    env = {"RKLLMD_CONFIG": str(path), "HF_ENDPOINT": MIRROR}
    from_file = load_config({}, environ=env)
    assert (from_file.hub.endpoint, from_file.hub.retries) == ("http://file.example", 2)
    env["RKLLMD_HUB__ENDPOINT"] = "http://env.example"
    assert load_config({}, environ=env).hub.endpoint == "http://env.example"
    no_file = {**NO_FILE, "HF_ENDPOINT": MIRROR, "RKLLMD_HUB__ENDPOINT": "http://env.example"}
    assert load_config({}, environ=no_file).hub.endpoint == "http://env.example"


def test_other_hub_keys_leave_hf_endpoint_in_force(tmp_path: Path) -> None:
    path = write(tmp_path, "[hub]\nretries = 2\n")
    env = {"RKLLMD_CONFIG": str(path), "HF_ENDPOINT": MIRROR, "RKLLMD_HUB__TIMEOUT_SECONDS": "3"}
    config = load_config({}, environ=env)
    assert (config.hub.endpoint, config.hub.retries, config.hub.timeout_seconds) == (MIRROR, 2, 3)


def test_a_bad_hf_endpoint_is_refused_by_name_unless_overridden() -> None:
    message = refused(environ={**NO_FILE, "HF_ENDPOINT": "hf-mirror.example.org"})
    assert "hub.endpoint (from HF_ENDPOINT)" in message and "http(s) URL" in message
    explicit = {**NO_FILE, "HF_ENDPOINT": "junk", "RKLLMD_HUB__ENDPOINT": "http://env.example"}
    assert load_config({}, environ=explicit).hub.endpoint == "http://env.example"
    bad_own = refused(environ={**NO_FILE, "HF_ENDPOINT": MIRROR, "RKLLMD_HUB__ENDPOINT": "x"})
    assert "hub.endpoint: " in bad_own and "HF_ENDPOINT" not in bad_own


def test_an_empty_hf_endpoint_is_ignored() -> None:
    config = load_config({}, environ={**NO_FILE, "HF_ENDPOINT": " "})
    assert config.hub.endpoint == "https://huggingface.co"


# --- validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[queue]\nmax_waiting = 5000\n", "queue.max_waiting"),
        ("[models]\nsettle_seconds = 0\n", "models.settle_seconds"),
        ('log_level = "loud"\n', "log_level"),
        ("[queue]\nmax_wait = 1\n", "queue.max_wait"),
        ('[http]\nlisten = "8080"\n', "http.listen"),
        ('[llamacpp]\nthreads = "many"\n', "llamacpp.threads"),
    ],
)
def test_file_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    message = refused({"config": str(write(tmp_path, text))}, environ={})
    assert message.startswith("invalid configuration: ")
    assert key in message


def test_env_errors_name_the_key() -> None:
    message = refused(environ={**NO_FILE, "RKLLMD_QUEUE__MAX_WAITING": "lots"})
    assert "queue.max_waiting" in message


def test_file_problems_name_the_file(tmp_path: Path) -> None:
    assert "does not exist" in refused({"config": str(tmp_path / "absent.toml")}, environ={})
    bad = write(tmp_path, "this is = = not toml\n")
    message = refused({"config": str(bad)}, environ={})
    assert str(bad) in message and "not valid TOML" in message


@pytest.mark.parametrize("listen", ["0.0.0.0:8080", "192.168.1.10:8080", "[::]:8080"])
def test_non_loopback_listen_needs_a_key_or_explicit_consent(listen: str) -> None:
    message = refused({"http": {"listen": listen}})
    assert "api_key" in message and "allow_unauthenticated_remote" in message
    keyed = load_config({"http": {"listen": listen, "api_key": "secret"}}, environ=NO_FILE)
    assert keyed.http.listen == listen
    consent = {"listen": listen, "allow_unauthenticated_remote": True}
    assert load_config({"http": consent}, environ=NO_FILE).http.allow_unauthenticated_remote


@pytest.mark.parametrize("listen", ["127.0.0.1:8080", "localhost:1", "[::1]:65535", "127.8.9.1:80"])
def test_loopback_listen_needs_no_key(listen: str) -> None:
    assert load_config({"http": {"listen": listen}}, environ=NO_FILE).http.api_key is None


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "127.0.0.1:70000", "127.0.0.1", ":80"])
def test_bad_listen_values(listen: str) -> None:
    assert "http.listen" in refused({"http": {"listen": listen}})


def test_socket_path_longer_than_sun_path_is_refused() -> None:
    fits = "/tmp/" + "s" * (107 - len("/tmp/"))
    assert len(fits.encode()) == 107
    assert load_config({"socket": fits}, environ=NO_FILE).control_socket() == Path(fits)
    message = refused({"socket": fits + "x"})
    assert "socket" in message and "107" in message


# --- the default socket rule ----------------------------------------------------------


@pytest.fixture
def system_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "run" / "rkllmd" / "control.sock"
    monkeypatch.setattr(config_module, "SYSTEM_SOCKET", path)
    return path


def _writable(*paths: Path) -> Any:
    allowed = {str(p) for p in paths}

    def access(path: Any, mode: int) -> bool:
        return str(path) in allowed

    return access


def test_system_socket_when_run_dir_is_writable(
    system_socket: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system_socket.parent.mkdir(parents=True)
    monkeypatch.setattr(config_module.os, "access", _writable(system_socket.parent))
    assert default_socket_path() == system_socket
    assert Config().control_socket() == system_socket


def test_system_socket_when_run_dir_can_be_created(
    system_socket: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system_socket.parent.parent.mkdir(parents=True)  # /run exists, /run/rkllmd does not
    monkeypatch.setattr(config_module.os, "access", _writable(system_socket.parent.parent))
    assert default_socket_path() == system_socket


def test_runtime_dir_socket_for_an_unprivileged_user(
    system_socket: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system_socket.parent.mkdir(parents=True)
    monkeypatch.setattr(config_module.os, "access", _writable())
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert default_socket_path() == Path("/run/user/1000/rkllmd/control.sock")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert default_socket_path() == Path(f"/tmp/rkllmd-{os.getuid()}/control.sock")


def test_explicit_socket_wins(system_socket: Path) -> None:
    config = load_config({"socket": "/tmp/x/c.sock"}, environ=NO_FILE)
    assert config.control_socket() == Path("/tmp/x/c.sock")
    from_env = load_config({}, environ={**NO_FILE, "RKLLMD_SOCKET": "/tmp/y/c.sock"})
    assert from_env.control_socket() == Path("/tmp/y/c.sock")
