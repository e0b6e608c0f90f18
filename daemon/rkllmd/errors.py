"""The one exception hierarchy of rkllmd.

Every error a client can see is an ``RkllmdError`` subclass with a stable machine
``code``. Transports map these classes once (``rpc/errors.py`` to JSON-RPC codes,
the HTTP layer to status codes); nothing ever inspects message text. Messages are
written for people and must never contain filesystem paths or exception dumps.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, ClassVar


class RkllmdError(Exception):
    """Base class: an expected failure with a stable code and a safe message."""

    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def to_data(self) -> dict[str, Any]:
        """Machine-readable payload shared by every transport."""
        return {"code": self.code, **self.details}


class ConfigError(RkllmdError):
    """The configuration is invalid; raised before anything is bound."""

    code = "invalid_config"


# --- the request itself is wrong ---------------------------------------------------


class InvalidParams(RkllmdError):
    """A request parameter is missing, of the wrong type, or out of range."""

    code = "invalid_params"


class InvalidModelName(InvalidParams):
    """A model name that can never name a model (path tricks, control characters)."""

    code = "invalid_model_name"


class InvalidImage(InvalidParams):
    """An image that is not JPEG/PNG/WebP base64, or is over a ``[vision]`` limit."""

    code = "invalid_image"


class ModelHasNoVision(InvalidParams):
    """The request carries images and the model that would answer cannot see them."""

    code = "model_has_no_vision"


class UnsupportedSchema(InvalidParams):
    """A JSON Schema (structured output, a tool's parameters) uses a feature the
    grammar compiler cannot enforce; refused rather than silently ignored."""

    code = "unsupported_schema"


class UnsupportedByModel(InvalidParams):
    """A well-formed request the model (or its backend) cannot serve: embedding
    ``dimensions`` without Matryoshka training, ``suffix`` without fill-in-the-middle
    tokens, token-id input on the NPU."""

    code = "unsupported_by_model"


class DraftIncompatible(InvalidParams):
    """Speculative decoding asked for where it cannot work: a draft model that is not
    a GGUF or whose vocabulary differs from the model's, or a model on the NPU (the
    RKLLM runtime has no draft support)."""

    code = "draft_incompatible"


class ContextLengthExceeded(InvalidParams):
    """The prompt does not fit the loaded model's context window."""

    code = "context_length_exceeded"


class UnknownTemplate(InvalidParams):
    """A chat template name that neither the package nor the owner's folder holds."""

    code = "unknown_template"


class UnsupportedModelFormat(InvalidParams):
    """The named model's format cannot serve this purpose (an .rkllm embedding model
    beside the chat model)."""

    code = "unsupported_model_format"


class TokenizerUnavailable(UnsupportedModelFormat):
    """An .rkllm model without the tokenizer.json that tokenizing needs."""

    code = "tokenizer_unavailable"


class UnknownPreset(InvalidParams):
    """A sampler override preset that the presets folder does not hold."""

    code = "unknown_preset"


# --- the request is fine but names something that is not there --------------------


class ModelNotFound(RkllmdError):
    code = "model_not_found"


class ResponseNotFound(RkllmdError):
    """A stored Responses API answer that does not exist (or no longer does)."""

    code = "response_not_found"


class AmbiguousModel(RkllmdError):
    code = "ambiguous_model"


class NoModelLoaded(RkllmdError):
    code = "no_model_loaded"


class NotAvailable(RkllmdError):
    """A feature that this build or this state of the daemon does not offer."""

    code = "not_available"


# --- capacity and lifecycle --------------------------------------------------------


class QueueFull(RkllmdError):
    code = "queue_full"

    def __init__(self, message: str, *, retry_after: int, **details: Any) -> None:
        super().__init__(message, retry_after=retry_after, **details)
        self.retry_after = retry_after


class ShuttingDown(RkllmdError):
    code = "shutting_down"


class Aborted(RkllmdError):
    """The generation was cancelled (client gone, unload, shutdown)."""

    code = "aborted"


# --- the backend failed ------------------------------------------------------------


class LoadFailed(RkllmdError):
    code = "load_failed"


class BackendUnavailable(RkllmdError):
    """The runtime library for this model format is not installed."""

    code = "backend_unavailable"


class BackendCrashed(RkllmdError):
    """The worker process died (segfault, OOM, kill) or stopped answering."""

    code = "backend_crashed"


class GenerationFailed(RkllmdError):
    code = "generation_failed"


class StructuredOutputFailed(GenerationFailed):
    """No attempt produced output of the requested structure (JSON, a schema, a tool
    call); ``last_attempt`` holds the text of the last one."""

    code = "structured_output_failed"


# --- the model store (pull / remove) -----------------------------------------------


class ChooseModelFile(InvalidParams):
    """The repository holds several model files and the request did not pick one."""

    code = "choose_file"


class ModelInUse(RkllmdError):
    """Removing the resident model (or a repo being pulled) needs ``force``."""

    code = "model_in_use"


class PullFailed(RkllmdError):
    """A pull did not complete; nothing was published."""

    code = "pull_failed"


class HubUnreachable(PullFailed):
    """Offline mode, DNS, refused or timed-out connections, repeated 5xx."""

    code = "hub_unreachable"


class HubUnauthorized(PullFailed):
    """The repository is gated or private and the token is missing or refused."""

    code = "hub_unauthorized"


class RepoNotFound(PullFailed):
    code = "repo_not_found"


class InvalidListing(PullFailed):
    """The Hub listed a file name that could escape the models directory."""

    code = "invalid_listing"


class ChecksumMismatch(PullFailed):
    code = "checksum_mismatch"


class InsufficientStorage(PullFailed):
    code = "insufficient_storage"


class StorageError(RkllmdError):
    """The models directory cannot be changed: read-only, permission, name too long."""

    code = "storage_error"


class AlreadyRunning(RkllmdError):
    """Another daemon answers on the control socket; never steal it."""

    code = "already_running"


class ModelPinned(RkllmdError):
    """The resident model is pinned and a request would swap it out."""

    code = "model_pinned"


# --- HTTP edge: raised by the HTTP layer only, listed here to keep one hierarchy ---


class AuthenticationFailed(RkllmdError):
    code = "invalid_api_key"


class Forbidden(RkllmdError):
    code = "forbidden"


class PermissionDenied(Forbidden):
    """A valid API key on a management route: only the admin key may manage."""

    code = "permission_denied"


class LoadNotPermitted(PermissionDenied):
    """A request would load or replace a model, and its key may not (``model``)."""

    code = "load_not_permitted"


class RequestTimeout(RkllmdError):
    code = "request_timeout"


class PayloadTooLarge(RkllmdError):
    code = "payload_too_large"


class UnsupportedMediaType(RkllmdError):
    code = "unsupported_media_type"


class RouteNotFound(RkllmdError):
    code = "not_found"


class MethodNotAllowed(RkllmdError):
    code = "method_not_allowed"


# --- a server the daemon fetched from for a client failed ----------------------------


class ImageFetchFailed(RkllmdError):
    """An allowed image URL (``vision.fetch_urls``) could not be fetched: the server
    answered 5xx or could not be reached. What the client got wrong (a 4xx, a host not
    allowed, a redirect elsewhere, too many bytes) is ``InvalidImage`` instead."""

    code = "image_fetch_failed"


class ImageFetchTimeout(ImageFetchFailed):
    """Fetching an allowed image URL took longer than ``vision.fetch_timeout_seconds``."""

    code = "image_fetch_timeout"


# --- control socket edge -----------------------------------------------------------


class TooManyConnections(RkllmdError):
    """The control socket already holds ``control.max_connections`` connections."""

    code = "too_many_connections"


def _family(cls: type[RkllmdError]) -> Iterator[type[RkllmdError]]:
    yield cls
    for sub in cls.__subclasses__():
        yield from _family(sub)


def _by_code() -> Mapping[str, type[RkllmdError]]:
    found: dict[str, type[RkllmdError]] = {}
    for cls in _family(RkllmdError):
        if found.setdefault(cls.code, cls) is not cls:
            raise TypeError(f"error code {cls.code!r} is used by two classes")
    return MappingProxyType(found)


# Every class defined above, by its code: derived, so a new class cannot be forgotten.
ERRORS_BY_CODE = _by_code()


def error_from_code(code: str, message: str, **details: Any) -> RkllmdError:
    """Rebuild an error that crossed a process boundary (worker -> daemon)."""
    cls = ERRORS_BY_CODE.get(code, RkllmdError)
    return cls(message, **details)
