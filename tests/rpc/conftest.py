"""The NPU test double's fixtures, shared with tests/backends."""

from tests.backends.conftest import call_log, npu_daemon, npu_models

__all__ = ["call_log", "npu_daemon", "npu_models"]
