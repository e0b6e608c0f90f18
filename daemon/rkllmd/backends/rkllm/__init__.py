"""RKLLM (Rockchip NPU) backend: a ctypes binding of librkllmrt, loaded only in the worker."""

from .backend import RkllmBackend

__all__ = ["RkllmBackend"]
