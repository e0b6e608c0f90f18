"""The NPU double's fixtures, for dialect tests whose seed documents name .rkllm models."""

from tests.backends.conftest import call_log, npu_daemon, npu_models

__all__ = ["call_log", "npu_daemon", "npu_models"]
