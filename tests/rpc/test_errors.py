"""Every error a control call can raise has its own JSON-RPC code (docs/control-protocol.md)."""

from __future__ import annotations

from rkllmd import errors as e
from rkllmd.rpc.errors import INTERNAL_ERROR, INVALID_PARAMS, rpc_code

# Raised before the socket exists, or only by the HTTP edge: never a control-call answer.
NOT_RPC = {
    e.RkllmdError,
    e.ConfigError,
    e.AlreadyRunning,
    e.AuthenticationFailed,
    e.Forbidden,
    e.PermissionDenied,
    e.RequestTimeout,
    e.PayloadTooLarge,
    e.UnsupportedMediaType,
    e.RouteNotFound,
    e.MethodNotAllowed,
    e.ResponseNotFound,  # the Responses API's store
    e.ImageFetchFailed,  # image URLs are fetched by the HTTP edge only (vision.fetch_urls)
    e.ImageFetchTimeout,
}


def code_of(cls: type[e.RkllmdError]) -> int:
    return rpc_code(cls.__new__(cls))  # the mapping looks at the class only


def _all_errors() -> list[type[e.RkllmdError]]:
    found: list[type[e.RkllmdError]] = []
    pending = [e.RkllmdError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return [c for c in found if c.__module__ == e.__name__]


def test_every_application_error_has_a_code_of_its_own_kind() -> None:
    unmapped = [
        c.__name__ for c in _all_errors() if c not in NOT_RPC and code_of(c) == INTERNAL_ERROR
    ]
    assert not unmapped, f"map these in rkllmd/rpc/errors.py: {unmapped}"


def test_application_codes_are_in_the_reserved_range() -> None:
    for cls in _all_errors():
        if cls not in NOT_RPC:
            code = code_of(cls)
            assert code == INVALID_PARAMS or -32099 <= code <= -32000, cls


def test_known_codes_are_stable() -> None:
    assert rpc_code(e.ModelNotFound("x")) == -32001
    assert rpc_code(e.QueueFull("x", retry_after=2)) == -32004
    assert rpc_code(e.HubUnreachable("x")) == -32012
    assert rpc_code(e.ModelPinned("x")) == -32014
    assert rpc_code(e.InvalidModelName("x")) == INVALID_PARAMS
