"""llama.cpp backend (llama-cpp-python's C bindings) for .gguf models. Worker only."""

from .backend import LlamaCppBackend
from .setup import check_gguf_header, default_threads

__all__ = ["LlamaCppBackend", "check_gguf_header", "default_threads"]
