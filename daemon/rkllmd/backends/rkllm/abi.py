"""ctypes declarations of librkllmrt's C ABI, for runtime 1.3.x and 1.2.1-1.2.3.

Layouts follow rkllm.h of each release (see docs/board-setup.md and the team's
ABI notes). The two ABIs export the same symbol names, so a binding for the
wrong one links fine and then crashes: the version is detected first
(``version.py``) and the matching ``Abi`` is picked here.
"""

from __future__ import annotations

import ctypes
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    Union,
    c_bool,
    c_char_p,
    c_float,
    c_int,
    c_int8,
    c_int32,
    c_size_t,
    c_uint8,
    c_uint32,
    c_void_p,
)
from dataclasses import dataclass
from typing import Any

# LLMCallState
RUN_NORMAL, RUN_WAITING, RUN_FINISH, RUN_ERROR = 0, 1, 2, 3
# RKLLMInputType
INPUT_PROMPT, INPUT_TOKEN, INPUT_EMBED, INPUT_MULTIMODAL = 0, 1, 2, 3
# RKLLMInferMode
INFER_GENERATE, INFER_GET_LAST_HIDDEN_LAYER, INFER_GET_LOGITS = 0, 1, 2


class ExtendParam(Structure):
    _fields_ = [
        ("base_domain_id", c_int32),
        ("embed_flash", c_int8),
        ("enabled_cpus_num", c_int8),
        ("enabled_cpus_mask", c_uint32),
        ("n_batch", c_uint8),
        ("use_cross_attn", c_int8),
        ("reserved", c_uint8 * 104),
    ]


# The sampling run after top_k, in both RKLLMParam and RKLLMSamplingParam.
_SAMPLING_TAIL: list[tuple[str, Any]] = [
    ("top_p", c_float),
    ("temperature", c_float),
    ("repeat_penalty", c_float),
    ("frequency_penalty", c_float),
    ("presence_penalty", c_float),
    ("mirostat", c_int32),
    ("mirostat_tau", c_float),
    ("mirostat_eta", c_float),
]

_PARAM_HEAD: list[tuple[str, Any]] = [
    ("model_path", c_char_p),
    ("max_context_len", c_int32),
    ("max_new_tokens", c_int32),
    ("top_k", c_int32),
    ("n_keep", c_int32),
    *_SAMPLING_TAIL,
    ("skip_special_token", c_bool),
]


class Param13(Structure):
    _fields_ = [
        *_PARAM_HEAD,
        ("ignore_eos_token", c_bool),
        ("is_async", c_bool),
        ("extend_param", ExtendParam),
    ]


class Param12(Structure):
    _fields_ = [
        *_PARAM_HEAD,
        ("is_async", c_bool),
        ("img_start", c_char_p),
        ("img_end", c_char_p),
        ("img_content", c_char_p),
        ("extend_param", ExtendParam),
    ]


class LoraAdapter(Structure):
    _fields_ = [
        ("lora_adapter_path", c_char_p),
        ("lora_adapter_name", c_char_p),
        ("scale", c_float),
    ]


class EmbedInput(Structure):
    _fields_ = [("embed", POINTER(c_float)), ("n_tokens", c_size_t)]


class TokenInput(Structure):
    _fields_ = [("input_ids", POINTER(c_int32)), ("n_tokens", c_size_t)]


class ImageInput13(Structure):
    _fields_ = [
        ("image_embed", POINTER(c_float)),
        ("n_image_tokens", c_size_t),
        ("n_image", c_size_t),
        ("image_start", c_char_p),
        ("image_end", c_char_p),
        ("image_content", c_char_p),
        ("image_width", c_size_t),
        ("image_height", c_size_t),
    ]


class VideoInput13(Structure):
    _fields_ = [
        ("video_embed", POINTER(c_float)),
        ("n_frame_tokens", c_size_t),
        ("n_frame_per_video", c_size_t),
        ("n_video", c_size_t),
        ("video_start", c_char_p),
        ("video_end", c_char_p),
        ("video_content", c_char_p),
        ("frame_width", c_size_t),
        ("frame_height", c_size_t),
    ]


class MultiModalInput13(Structure):
    _fields_ = [("prompt", c_char_p), ("image", ImageInput13), ("video", VideoInput13)]


class MultiModalInput12(Structure):
    _fields_ = [
        ("prompt", c_char_p),
        ("image_embed", POINTER(c_float)),
        ("n_image_tokens", c_size_t),
        ("n_image", c_size_t),
        ("image_width", c_size_t),
        ("image_height", c_size_t),
    ]


class InputUnion13(Union):
    _fields_ = [
        ("prompt_input", c_char_p),
        ("embed_input", EmbedInput),
        ("token_input", TokenInput),
        ("multimodal_input", MultiModalInput13),
    ]


class InputUnion12(Union):
    _fields_ = [
        ("prompt_input", c_char_p),
        ("embed_input", EmbedInput),
        ("token_input", TokenInput),
        ("multimodal_input", MultiModalInput12),
    ]


_INPUT_HEAD: list[tuple[str, Any]] = [
    ("role", c_char_p),
    ("enable_thinking", c_bool),
    ("input_type", c_int),
]


class Input13(Structure):
    _anonymous_ = ("u",)
    _fields_ = [*_INPUT_HEAD, ("u", InputUnion13)]


class Input12(Structure):
    _anonymous_ = ("u",)
    _fields_ = [*_INPUT_HEAD, ("u", InputUnion12)]


class LoraParam(Structure):
    _fields_ = [("lora_adapter_name", c_char_p)]


class PromptCacheParam(Structure):
    _fields_ = [("save_prompt_cache", c_int), ("prompt_cache_path", c_char_p)]


class SamplingParam(Structure):
    _fields_ = [("top_k", c_int32), *_SAMPLING_TAIL]


_INFER_HEAD: list[tuple[str, Any]] = [
    ("mode", c_int),
    ("lora_params", POINTER(LoraParam)),
    ("prompt_cache_params", POINTER(PromptCacheParam)),
]


class InferParam13(Structure):
    _fields_ = [
        *_INFER_HEAD,
        ("sampling_params", POINTER(SamplingParam)),
        ("keep_history", c_int),
        ("max_new_tokens", c_int32),
    ]


class InferParam12(Structure):
    _fields_ = [*_INFER_HEAD, ("keep_history", c_int)]


class HiddenLayer(Structure):
    _fields_ = [
        ("hidden_states", POINTER(c_float)),
        ("embd_size", c_int),
        ("num_tokens", c_int),
    ]


class Logits(Structure):
    _fields_ = [("logits", POINTER(c_float)), ("vocab_size", c_int), ("num_tokens", c_int)]


class PerfStat(Structure):
    _fields_ = [
        ("prefill_time_ms", c_float),
        ("prefill_tokens", c_int),
        ("generate_time_ms", c_float),
        ("generate_tokens", c_int),
        ("memory_usage_mb", c_float),
    ]


class Result(Structure):
    _fields_ = [
        ("text", c_char_p),  # bytes; may stop inside a UTF-8 character (WAITING)
        ("token_id", c_int32),
        ("last_hidden_layer", HiddenLayer),
        ("logits", Logits),
        ("perf", PerfStat),
    ]


# int cb(RKLLMResult*, void* userdata, LLMCallState); the same in 1.2.1+ and 1.3.
ResultCallback = CFUNCTYPE(c_int, POINTER(Result), c_void_p, c_int)


class Callbacks13(Structure):
    _fields_ = [
        ("result_callback", ResultCallback),
        ("result_userdata", c_void_p),
        ("tokenizer_callback", c_void_p),
        ("tokenizer_userdata", c_void_p),
        ("embed_callback", c_void_p),
        ("embed_userdata", c_void_p),
    ]


@dataclass(frozen=True)
class Abi:
    """The struct set of one runtime ABI generation."""

    name: str  # "1.3" or "1.2"
    param: type[Structure]
    input: type[Structure]
    infer: type[Structure]
    per_run_sampling: bool  # 1.3: RKLLMInferParam.sampling_params / max_new_tokens

    def structs(self) -> dict[str, type[Any]]:
        return {
            "RKLLMExtendParam": ExtendParam,
            "RKLLMParam": self.param,
            "RKLLMInput": self.input,
            "RKLLMInferParam": self.infer,
            "RKLLMResult": Result,
            "RKLLMPerfStat": PerfStat,
            "RKLLMLoraAdapter": LoraAdapter,
            **(
                {"RKLLMSamplingParam": SamplingParam, "RKLLMCallback": Callbacks13}
                if self.name == "1.3"
                else {}
            ),
        }


ABI_13 = Abi("1.3", Param13, Input13, InferParam13, per_run_sampling=True)
ABI_12 = Abi("1.2", Param12, Input12, InferParam12, per_run_sampling=False)
ABIS = {"1.3": ABI_13, "1.2": ABI_12}


def bind(lib: ctypes.CDLL, abi: Abi) -> None:
    """Declare argument and result types of every function the backend calls."""
    h = c_void_p
    init_cb: Any = POINTER(Callbacks13) if abi.name == "1.3" else ResultCallback
    table: dict[str, tuple[Any, list[Any]]] = {
        "rkllm_createDefaultParam": (abi.param, []),
        "rkllm_init": (c_int, [POINTER(h), POINTER(abi.param), init_cb]),
        "rkllm_destroy": (c_int, [h]),
        "rkllm_run": (c_int, [h, POINTER(abi.input), POINTER(abi.infer), c_void_p]),
        "rkllm_abort": (c_int, [h]),
        "rkllm_is_running": (c_int, [h]),
        "rkllm_clear_kv_cache": (c_int, [h, c_int, POINTER(c_int), POINTER(c_int)]),
        "rkllm_get_kv_cache_size": (c_int, [h, POINTER(c_int)]),
        "rkllm_set_chat_template": (c_int, [h, c_char_p, c_char_p, c_char_p]),
        "rkllm_set_function_tools": (c_int, [h, c_char_p, c_char_p, c_char_p]),
        "rkllm_load_lora": (c_int, [h, POINTER(LoraAdapter)]),
    }
    for name, (restype, argtypes) in table.items():
        func = getattr(lib, name)
        func.restype = restype
        func.argtypes = argtypes
