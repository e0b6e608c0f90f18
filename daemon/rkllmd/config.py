"""One frozen, validated configuration: defaults < TOML file < RKLLMD_* env < CLI.

One foreign variable takes part: ``HF_ENDPOINT``, the Hugging Face tools' way to
name a Hub mirror, replaces the built-in ``hub.endpoint`` (any explicit one wins).

Building a ``Config`` has no side effects; every problem is reported as a
``ConfigError`` with the offending key, before the daemon binds anything.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from .errors import ConfigError
from .fetchrules import parse_rules
from .safefs import UnsafeEntry, read_file
from .untrusted import TooDeep, load_toml

DEFAULT_CONFIG_FILE = Path("/etc/rkllmd/rkllmd.toml")
DEFAULT_MODELS_DIR = Path("/var/lib/rkllmd/models")
DEFAULT_TEMPLATES_DIR = Path("/etc/rkllmd/templates")
SYSTEM_SOCKET = Path("/run/rkllmd/control.sock")
ENV_PREFIX = "RKLLMD_"
MAX_CONFIG_BYTES = 1024 * 1024
HF_ENDPOINT = "HF_ENDPOINT"

LogLevel = Literal["debug", "info", "warning", "error"]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelsSection(_Section):
    settle_seconds: float = Field(0.5, gt=0, le=60)
    rescan_interval: float = Field(30.0, ge=1, le=3600)


class QueueSection(_Section):
    max_waiting: int = Field(8, ge=0, le=1024)


class WorkerSection(_Section):
    load_timeout_seconds: float = Field(300.0, gt=0)
    unload_grace_seconds: float = Field(5.0, gt=0, le=120)
    abort_grace_seconds: float = Field(5.0, gt=0, le=120)
    stuck_seconds: float = Field(300.0, gt=0)


class ControlSection(_Section):
    """Limits of the control socket (local admins, but still bounded)."""

    # Connections beyond this are answered too_many_connections and closed.
    max_connections: int = Field(64, ge=1, le=65536)
    # A connection with no call in flight is closed after this many idle seconds;
    # calls that stream (chat tokens, load/pull progress) are never cut. 0 = never.
    idle_seconds: float = Field(300.0, ge=0, le=86400)


class GenerationSection(_Section):
    load_on_request: bool = True
    default_max_tokens: int = Field(1024, ge=1, le=1_000_000)
    # Unload the model after this many idle seconds; 0 keeps it resident forever.
    keep_alive_seconds: float = Field(0.0, ge=0)
    # A pinned model is never unloaded for idleness nor swapped by a request
    # naming another model (an explicit admin load still replaces it).
    pin: str | None = None


class StructuredSection(_Section):
    # Regenerations of a structured reply (JSON, a schema, a forced tool call) that
    # fails its check. On the NPU, which cannot constrain sampling, this and the
    # prompt instruction are what enforce the structure.
    retries: int = Field(2, ge=0, le=10)


class ResponsesSection(_Section):
    """The OpenAI Responses API's in-memory store (``previous_response_id``, GET)."""

    max_stored: int = Field(256, ge=0, le=100_000)  # oldest dropped first; 0 stores none
    ttl_seconds: float = Field(3600.0, gt=0, le=30 * 86400)


class LlamaCppSection(_Section):
    ctx_size: int = Field(4096, ge=0, le=1_048_576)  # per generation
    threads: int = Field(0, ge=0, le=1024)
    batch_size: int = Field(512, ge=1, le=65_536)
    # Generations decoded together (fewer when their contexts do not fit in memory).
    parallel: int = Field(4, ge=1, le=64)
    # Speculative decoding: a smaller model with the same vocabulary (a model name
    # in the models dir), or prompt lookup with n-grams of this size (0: off).
    draft_model: str | None = None
    lookup_ngram: int = Field(0, ge=0, le=8)
    draft_tokens: int = Field(8, ge=1, le=64)


class RkllmSection(_Section):
    library: Path | None = None
    # librknnrt.so, which runs a model's .rknn vision encoder (None: the loader path,
    # then /usr/lib/librknnrt.so).
    rknn_library: Path | None = None
    # Runtime version when it cannot be read from the library ("1.3.0", "1.2.3").
    version: str | None = Field(None, pattern=r"^v?\d+\.\d+\.\d+\S*$")
    # max_context_len; clamped to the model's own limit when it is higher.
    ctx_size: int = Field(4096, ge=32, le=131_072)
    threads: int = Field(4, ge=1, le=8)  # enabled_cpus_num (the big cores)
    chat_template: str | None = None  # a family name (chatml, qwen3, ...) or Jinja


class SamplingSection(_Section):
    # Sampler override presets (*.toml, *.yml, *.yaml), TabbyAPI's "sampler overrides".
    presets_dir: Path = Path("/etc/rkllmd/sampler-overrides")
    # The preset in force from start; None: no overrides until one is switched on.
    preset: str | None = Field(None, min_length=1, max_length=255)


class HttpSection(_Section):
    enabled: bool = True
    listen: str = "127.0.0.1:8080"
    api_key: str | None = None
    # Management routes (load/unload/download) need this key when set.
    admin_key: str | None = None
    # With admin_key set, a request that would load or replace a model by naming
    # it (chat, completions, embeddings) needs the admin key too, unless this is on.
    allow_inference_loads: bool = False
    allow_unauthenticated_remote: bool = False
    # Extra Host header values accepted besides loopback names (DNS-rebinding guard).
    allowed_hosts: list[str] = []
    # Browser origins allowed by CORS; none by default (no CORS headers at all).
    cors_origins: list[str] = []
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    body_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    keepalive_seconds: float = Field(15.0, gt=0, le=3600)
    first_token_timeout_seconds: float = Field(600.0, gt=0)
    # Whole-request limit for generations; 0 means none.
    request_timeout_seconds: float = Field(0.0, ge=0)
    # A model name that resolves to nothing on the OpenAI routes: "resident" answers
    # with the resident model (and says so), "error" answers 404.
    unknown_model: Literal["resident", "error"] = "resident"

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_listen(value)
        return value


class SimpleChatSection(_Section):
    """The simple chat dialect's default models (/chat/regular, /chat/vision)."""

    # Model names (id, file name, prefix or alias); not set: the resident model.
    default_regular_model: str | None = None
    default_vision_model: str | None = None


class VisionSection(_Section):
    """Limits on the images a request may carry (see images.py)."""

    max_images: int = Field(8, ge=0, le=256)  # per request
    max_image_bytes: int = Field(16 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)  # decoded
    # Read from the header before anything is decoded: 7680x4320 (an 8K frame).
    max_image_pixels: int = Field(7680 * 4320, ge=1, le=1 << 30)
    # http(s) image URLs the daemon may fetch (fetchrules.py); empty: none, ever.
    fetch_urls: tuple[str, ...] = ()
    # One image's fetch, redirects included, must end within this many seconds.
    fetch_timeout_seconds: float = Field(10.0, gt=0, le=300)
    # Redirects followed per image, each within the same scheme, host and port.
    fetch_max_redirects: int = Field(3, ge=0, le=10)

    @field_validator("fetch_urls")
    @classmethod
    def _check_fetch_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        parse_rules(value)  # a ValueError names the entry
        return value


class HubSection(_Section):
    """Where ``pull`` downloads from (the Hugging Face Hub or a mirror) and how."""

    endpoint: str = "https://huggingface.co"
    token: SecretStr | None = None
    token_file: Path | None = None  # must be readable by the daemon's user only
    timeout_seconds: float = Field(10.0, gt=0, le=300)  # connecting, and every read
    # A transfer receiving less than 64 KiB in this many seconds is stalled (retried).
    stall_seconds: float = Field(30.0, ge=1, le=3600)
    retries: int = Field(5, ge=0, le=100)  # per file, with exponential backoff
    min_free_bytes: int = Field(256 * 1024 * 1024, ge=0)  # kept free after a pull
    keep_partial_hours: float = Field(168.0, ge=0)  # resumable staging older: removed
    technical_files: tuple[str, ...] = (
        "config.json",
        "generation_config.json",
        "meta.json",
        "tokenizer_config.json",
        "tokenizer.json",
    )

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if scheme not in ("http", "https") or not sep or not rest.strip("/"):
            raise ValueError(f"endpoint must be an http(s) URL, got {redact_url(value)!r}")
        return value.rstrip("/")


def redact_url(url: str) -> str:
    """``url`` without the password (or token) of a ``user:password@`` part."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if not sep or "@" not in authority:
        return url
    return f"{scheme}://***@{authority.rpartition('@')[2]}{slash}{path}"


class Config(_Section):
    models_dir: Path = DEFAULT_MODELS_DIR
    # The owner's chat templates (*.jinja), by name, besides the built-in ones.
    templates_dir: Path = DEFAULT_TEMPLATES_DIR
    socket: Path | None = None
    socket_group: str = "rkllm"
    load: str | None = None
    log_level: LogLevel = "info"
    drain_seconds: float = Field(15.0, ge=0, le=600)
    control: ControlSection = ControlSection()
    models: ModelsSection = ModelsSection()
    queue: QueueSection = QueueSection()
    worker: WorkerSection = WorkerSection()
    generation: GenerationSection = GenerationSection()
    structured: StructuredSection = StructuredSection()
    responses: ResponsesSection = ResponsesSection()
    llamacpp: LlamaCppSection = LlamaCppSection()
    rkllm: RkllmSection = RkllmSection()
    sampling: SamplingSection = SamplingSection()
    http: HttpSection = HttpSection()
    hub: HubSection = HubSection()
    vision: VisionSection = VisionSection()
    simplechat: SimpleChatSection = SimpleChatSection()
    config_file: Path | None = None

    @field_validator("socket")
    @classmethod
    def _check_socket(cls, value: Path | None) -> Path | None:
        # sun_path is 108 bytes including the terminating NUL.
        if value is not None and len(os.fsencode(value)) > 107:
            raise ValueError("socket path is longer than the 107 bytes a Unix socket allows")
        return value

    def control_socket(self) -> Path:
        return self.socket if self.socket is not None else default_socket_path()


class LiveConfig:
    """The configuration in force. SIGHUP swaps it whole; every reader takes
    ``current`` when it needs a value, so a reload applies to the next request."""

    def __init__(self, config: Config) -> None:
        self._config = config

    @property
    def current(self) -> Config:
        return self._config

    def replace(self, config: Config) -> None:
        self._config = config


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` for IPv6) and check both halves."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"listen must be HOST:PORT, got {value!r}")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {value!r}")
    return host.strip("[]"), port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_socket_path() -> Path:
    """The system socket when /run/rkllmd is usable, else a per-user one."""
    run_dir = SYSTEM_SOCKET.parent
    if os.access(run_dir, os.W_OK) or (not run_dir.exists() and os.access(run_dir.parent, os.W_OK)):
        return SYSTEM_SOCKET
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "rkllmd" / "control.sock"
    return Path(f"/tmp/rkllmd-{os.getuid()}") / "control.sock"  # noqa: S108 - private 0700 dir


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    """RKLLMD_MODELS_DIR -> models_dir; RKLLMD_QUEUE__MAX_WAITING -> queue.max_waiting."""
    layer: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        keys = name[len(ENV_PREFIX) :].lower().split("__")
        node = layer
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return layer


def _read_file(path: Path) -> dict[str, Any]:
    """The file's TOML; every way it can be wrong is a ConfigError (exit 2, or a failed
    reload that keeps the running configuration), never a traceback."""
    try:
        raw = read_file(path, MAX_CONFIG_BYTES, follow=True, devices=True)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except PermissionError:
        raise ConfigError(f"config file {path} is not readable") from None
    except UnsafeEntry:
        raise ConfigError(f"config file {path} is not a regular file") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read ({exc.strerror})") from None
    except ValueError:
        raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_BYTES} bytes") from None
    try:
        return load_toml(raw)
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except TooDeep as exc:
        raise ConfigError(f"config file {path} is {exc}") from None
    except ValueError as exc:  # tomllib.TOMLDecodeError
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _describe(exc: ValidationError, sources: Mapping[str, str]) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "config"
        source = f" (from {sources[where]})" if where in sources else ""
        parts.append(f"{where}{source}: {err['msg']}")
    return "invalid configuration: " + "; ".join(parts)


def _hf_endpoint_default(data: dict[str, Any], environ: Mapping[str, str]) -> bool:
    """Put ``HF_ENDPOINT`` into ``hub.endpoint`` unless a layer set that key.

    Board owners set HF_ENDPOINT for every Hugging Face tool to reach a mirror, so
    it stands in for the built-in default; the file, RKLLMD_HUB__ENDPOINT and the
    CLI are explicit rkllmd settings and win. Returns whether HF_ENDPOINT was used.
    """
    endpoint = environ.get(HF_ENDPOINT, "").strip()
    hub = data.get("hub", {})
    if not endpoint or not isinstance(hub, Mapping) or "endpoint" in hub:
        return False
    data["hub"] = {**hub, "endpoint": endpoint}
    return True


def load_config(
    cli: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Merge all layers and validate once. ``cli`` holds only options given."""
    environ = os.environ if environ is None else environ
    cli = dict(cli or {})
    explicit = cli.pop("config", None) or environ.get(ENV_PREFIX + "CONFIG")
    config_path = Path(explicit) if explicit else DEFAULT_CONFIG_FILE
    data: dict[str, Any] = {}
    if explicit or config_path.exists():
        data = _read_file(config_path)
        data["config_file"] = config_path
    data = _merge(data, _env_layer(environ))
    data = _merge(data, cli)
    from_hf = _hf_endpoint_default(data, environ)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        sources = {"hub.endpoint": HF_ENDPOINT} if from_hf else {}
        raise ConfigError(_describe(exc, sources)) from None
    _check_http_exposure(config)
    return config


def with_listen(config: Config, listen: str) -> Config:
    """The config as if ``http.listen`` were ``listen`` (an activated socket's real address)."""
    updated = config.model_copy(update={"http": config.http.model_copy(update={"listen": listen})})
    _check_http_exposure(updated)
    return updated


def _check_http_exposure(config: Config) -> None:
    host, _ = parse_listen(config.http.listen)
    exposed = not is_loopback(host)
    if exposed and not config.http.api_key and not config.http.allow_unauthenticated_remote:
        raise ConfigError(
            f"refusing to listen on non-loopback address {config.http.listen} without "
            "http.api_key; set one, or set http.allow_unauthenticated_remote = true"
        )
