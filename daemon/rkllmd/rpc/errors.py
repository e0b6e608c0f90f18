"""The one mapping from RkllmdError to JSON-RPC error codes."""

from __future__ import annotations

from typing import Any

from .. import errors as e

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

# Application codes live in -32000..-32099; data.code carries the stable name.
_APPLICATION_CODES: dict[type[e.RkllmdError], int] = {
    e.InvalidParams: INVALID_PARAMS,
    e.ModelNotFound: -32001,
    e.AmbiguousModel: -32002,
    e.NoModelLoaded: -32003,
    e.QueueFull: -32004,
    e.LoadFailed: -32005,
    e.BackendCrashed: -32006,
    e.BackendUnavailable: -32007,
    e.ShuttingDown: -32008,
    e.NotAvailable: -32009,
    e.Aborted: -32010,
    e.GenerationFailed: -32011,
    e.PullFailed: -32012,  # data.code: hub_unreachable, checksum_mismatch, ...
    e.ModelInUse: -32013,
    e.ModelPinned: -32014,  # a request would swap out the pinned model
    e.TooManyConnections: -32015,  # sent once, then the connection is closed
    # Not raised by control calls today (local admins may load), mapped all the same.
    e.LoadNotPermitted: -32016,
    e.StorageError: -32017,  # the models directory cannot be written
}


def rpc_code(error: e.RkllmdError) -> int:
    for cls in type(error).__mro__:
        code = _APPLICATION_CODES.get(cls)
        if code is not None:
            return code
    return INTERNAL_ERROR


def error_object(code: int, message: str, data: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        body["data"] = data
    return body


def error_response(request_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": error_object(code, message, data), "id": request_id}
