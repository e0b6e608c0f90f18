"""LoRA adapters (GGUF) on a llama.cpp context, through llama.cpp's C API.

Kept apart from the backend so that any llama.cpp backend (the one on
llama-cpp-python's ``Llama``, an engine on the C API) applies adapters the same
way: initialise each adapter against the model, then set them with their scales on
the context. The adapters belong to the model and are freed before it.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import LoadFailed

logger = logging.getLogger(__name__)


def adapter_paths(
    lora_dir: str | None, loras: Sequence[tuple[str, float]]
) -> list[tuple[str, Path, float]]:
    """Each adapter named in the load options, as a file of the lora folder."""
    if not loras:
        return []
    if lora_dir is None:
        raise LoadFailed("LoRA adapters were asked for but no adapter folder is configured")
    return [(name, Path(lora_dir) / f"{name}.gguf", scale) for name, scale in loras]


def _freer(lib: Any, handle: Any) -> Callable[[], None]:
    def free() -> None:
        lib.llama_adapter_lora_free(handle)

    return free


def apply_adapters(
    lib: Any,
    model: Any,
    context: Any,
    adapters: Sequence[tuple[str, Path, float]],
    on_close: Callable[[Callable[[], None]], None],
) -> None:
    """Load ``adapters`` for ``model`` and set them on ``context``.

    ``on_close`` registers a cleanup to run before the model is freed (an ExitStack's
    ``callback``). An adapter llama.cpp refuses (not a LoRA GGUF, another architecture,
    tensors that do not match the model) fails the load, naming it.
    """
    if not adapters:
        return
    handles = []
    for name, path, _ in adapters:
        handle = lib.llama_adapter_lora_init(model, str(path).encode())
        if not handle:
            raise LoadFailed(
                f"the LoRA adapter {name} could not be applied "
                "(not a LoRA adapter in GGUF for this model's architecture and shapes)"
            )
        on_close(_freer(lib, handle))
        handles.append(handle)
    array = (lib.llama_adapter_lora_p_ctypes * len(handles))(*handles)
    scales = (ctypes.c_float * len(handles))(*(float(s) for _, _, s in adapters))
    if lib.llama_set_adapters_lora(context, array, len(handles), scales) != 0:
        raise LoadFailed("llama.cpp refused to set the LoRA adapters on the context")
    logger.info("LoRA adapters applied: %s", ", ".join(f"{n} x{s:g}" for n, _, s in adapters))
