"""Load a .rkllm model: runtime, layout check, parameters, init, properties."""

from __future__ import annotations

import ctypes
import os
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import LoadFailed
from ...props import ModelProps
from ...requests import BackendDefaults, LoadOptions, Sampling
from ..base import pick_option
from . import abi as c
from .initlog import error_lines, parse_facts
from .layout import check_sizes, host_abi
from .library import SUPPORTED, open_runtime
from .native import NativeModel
from .template import ChatFormat, choose_format
from .vision import Embeddings, VisionEncoder

DEFAULT_CTX = 4096
DEFAULT_THREADS = 4
MAX_THREADS = 8


@dataclass
class LoadedModel:
    native: NativeModel
    chat_format: ChatFormat
    n_ctx: int
    init_sampling: Sampling
    props: ModelProps | None = None
    lora: str | None = None  # the adapter loaded with rkllm_load_lora, used by every run

    def make_input(self, text: bytes, enable_thinking: bool | None) -> Any:
        rk_input = self.native.abi.input()
        rk_input.role = b"user"
        rk_input.enable_thinking = bool(enable_thinking)
        rk_input.input_type = c.INPUT_PROMPT
        rk_input.prompt_input = text
        return rk_input

    def make_multimodal(
        self, text: bytes, embeddings: Embeddings, vision: VisionEncoder, thinking: bool | None
    ) -> Any:
        """An RKLLM_INPUT_MULTIMODAL input: ``text`` holds one <image> per image. The
        caller keeps ``embeddings`` alive until the run has returned."""
        rk_input = self.native.abi.input()
        rk_input.role = b"user"
        rk_input.enable_thinking = bool(thinking)
        rk_input.input_type = c.INPUT_MULTIMODAL
        mm = rk_input.multimodal_input
        mm.prompt = text
        image = mm.image if self.native.abi.name == "1.3" else mm  # 1.2: flat, markers at init
        image.image_embed = ctypes.cast(embeddings.values, ctypes.POINTER(ctypes.c_float))
        image.n_image_tokens = embeddings.tokens
        image.n_image = embeddings.n_image
        image.image_width, image.image_height = vision.shape.width, vision.shape.height
        if self.native.abi.name == "1.3":
            image.image_start, image.image_end, image.image_content = vision.marker_bytes
        return rk_input

    def make_infer(
        self, mode: int, sampling: Sampling | None, max_new: int, keep_history: int = 1
    ) -> Any:
        infer = self.native.abi.infer()
        infer.mode = mode
        infer.keep_history = keep_history
        if self.lora is not None and mode == c.INFER_GENERATE:
            infer.lora_params = ctypes.pointer(c.LoraParam(self.lora.encode()))
        if self.native.abi.per_run_sampling:
            infer.max_new_tokens = max_new
            if sampling is not None:
                infer.sampling_params = ctypes.pointer(sampling_param(sampling))
        return infer


def sampling_param(s: Sampling) -> c.SamplingParam:
    param = c.SamplingParam()
    _set_sampling(param, s)
    return param


def _set_sampling(param: Any, s: Sampling) -> None:
    """The sampling fields RKLLMParam (init) and RKLLMSamplingParam (per run) share."""
    param.top_k = max(1, s.top_k) if s.temperature > 0 else 1
    param.top_p, param.temperature = s.top_p, s.temperature
    param.repeat_penalty = s.repeat_penalty
    param.frequency_penalty, param.presence_penalty = s.frequency_penalty, s.presence_penalty
    param.mirostat, param.mirostat_tau, param.mirostat_eta = 0, 5.0, 0.1


def cpu_mask(threads: int, cpus: int) -> int:
    """The highest ``threads`` CPUs: the big cores on RK3588/RK3576 (4-7)."""
    first = max(0, cpus - threads)
    return sum(1 << i for i in range(first, first + threads))


# 1.2 takes the image markers at init (RKLLMParam.img_*), 1.3 with each input.
ImageMarkers = tuple[bytes, bytes, bytes]


def _fill_param(
    param: Any, path: Path, ctx: int, threads: int, s: Sampling, markers: ImageMarkers | None
) -> None:
    param.model_path = os.fsencode(path)
    param.max_context_len = ctx
    param.max_new_tokens = ctx
    _set_sampling(param, s)
    param.n_keep = -1
    param.skip_special_token = True
    param.is_async = False
    ext = param.extend_param
    ext.base_domain_id = 0
    ext.embed_flash = 1
    ext.enabled_cpus_num = threads
    ext.enabled_cpus_mask = cpu_mask(threads, os.cpu_count() or threads)
    ext.n_batch = 1
    ext.use_cross_attn = 0
    if hasattr(param, "img_start"):
        param.img_start, param.img_end, param.img_content = markers or (b"", b"", b"")


def _init(
    native: NativeModel,
    path: Path,
    ctx: int,
    threads: int,
    s: Sampling,
    markers: ImageMarkers | None,
) -> int:
    param = native.default_param()
    _fill_param(param, path, ctx, threads, s, markers)
    return native.init(param)


def load_model(
    path: Path,
    options: LoadOptions,
    defaults: BackendDefaults,
    markers: ImageMarkers | None = None,
) -> LoadedModel:
    runtime = open_runtime(defaults.library, defaults.runtime_version)
    sizes = check_sizes(runtime.abi)
    c.bind(runtime.lib, runtime.abi)
    chat_format = choose_format(path, options.chat_template or defaults.chat_template)
    native = NativeModel(runtime)
    # 0 counts as not given here (unlike llama.cpp): rkllm_init has no automatic
    # value for either. max_context_len must be a size within the limit fixed at
    # conversion, which only the init log tells; enabled_cpus_num is a count of
    # cores (1-8). So the configured default applies, and for the context it is
    # lowered to the model's limit below, as when no size was asked for.
    ctx = pick_option(options.ctx_size, defaults.ctx_size, DEFAULT_CTX, zero_means=None)
    threads = pick_option(options.threads, defaults.threads, DEFAULT_THREADS, zero_means=None)
    threads = max(1, min(threads, MAX_THREADS))
    sampling = Sampling()
    rc = _init(native, path, ctx, threads, sampling, markers)
    facts = parse_facts(native.init_log)
    limit = facts.get("max_context_limit")
    if rc != 0 and not options.ctx_size and isinstance(limit, int) and 0 < limit < ctx:
        ctx = limit  # the configured default is a preference; the model's limit wins
        rc = _init(native, path, ctx, threads, sampling, markers)
        facts = parse_facts(native.init_log)
    if rc != 0:
        raise _init_error(rc, ctx, facts, native.init_log)
    if native.set_chat_template("", "", "") != 0:
        native.destroy()
        raise LoadFailed("the RKLLM runtime refused the pass-through chat template")
    model = LoadedModel(
        native, chat_format, ctx, sampling, lora=_load_lora(native, options, defaults)
    )
    model.props = _props(model, facts, options, threads, sizes)
    return model


def _load_lora(native: NativeModel, options: LoadOptions, defaults: BackendDefaults) -> str | None:
    """rkllm_load_lora for the adapter asked for; its name, which each run selects."""
    if not options.loras:
        return None
    if len(options.loras) > 1 or defaults.lora_dir is None:
        native.destroy()
        raise LoadFailed("the NPU runtime applies one LoRA adapter at a time")
    name, scale = options.loras[0]
    path = Path(defaults.lora_dir) / f"{name}.rkllm"
    if native.load_lora(os.fsencode(path), name, scale) != 0:
        native.destroy()
        raise LoadFailed(f"the RKLLM runtime could not load the LoRA adapter {name}")
    return name


def _init_error(rc: int, ctx: int, facts: dict[str, Any], log: list[str]) -> LoadFailed:
    limit = facts.get("max_context_limit")
    if isinstance(limit, int) and ctx > limit:
        return LoadFailed(
            f"ctx_size {ctx} exceeds the model's limit of {limit} tokens", limit=limit
        )
    errors = error_lines(log)
    detail = "; ".join(errors[-2:]) if errors else f"rkllm_init returned {rc}"
    return LoadFailed(f"the RKLLM runtime could not load the model: {detail}")


def _props(
    model: LoadedModel,
    facts: dict[str, Any],
    options: LoadOptions,
    threads: int,
    sizes: dict[str, int],
) -> ModelProps:
    rt = model.native.runtime
    fmt = model.chat_format
    per_run = rt.abi.per_run_sampling
    cores = facts.get("npu_core_num")
    init = model.init_sampling
    return ModelProps(
        backend="rkllm",
        backend_version=rt.version,
        n_ctx=model.n_ctx,
        n_ctx_train=facts.get("max_context_limit"),
        threads=threads,
        chat_template=fmt.text if fmt.text is not None else fmt.family,
        chat_template_source=fmt.source,
        reasoning_starts_open=fmt.opens_reasoning(),
        notes=_notes(options, cores, per_run, fmt.source),
        runtime={
            "library": rt.path,
            "version": rt.version,
            "version_source": rt.version_source,
            "abi": rt.abi.name,
            "host_abi": host_abi(),
            "struct_sizes": dict(sizes),
            "driver_version": facts.get("driver_version"),
            "platform": facts.get("platform"),
            "supported": list(SUPPORTED),
            "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        },
        details={
            "max_context_limit": facts.get("max_context_limit"),
            "npu_cores": cores,
            "toolkit_version": facts.get("toolkit_version"),
            "target_platform": facts.get("target_platform"),
            "model_dtype": facts.get("model_dtype"),
            "cpu_mask": hex(cpu_mask(threads, os.cpu_count() or threads)),
            "chat_template_family": fmt.family,
            "sampling": "per-request" if per_run else "init-time",
            "init_sampling": {
                "temperature": init.temperature,
                "top_p": init.top_p,
                "top_k": init.top_k,
                "repeat_penalty": init.repeat_penalty,
            },
            "kv_reuse": True,
            "embeddings": "last hidden layer, mean-pooled, L2-normalised",
            "init_log": list(model.native.init_log[-20:]),
        },
    )


def _notes(
    options: LoadOptions, cores: Any, per_run: bool, template_source: str
) -> tuple[str, ...]:
    """Say which requested settings cannot apply instead of dropping them."""
    notes: list[str] = []
    if options.npu_cores is not None and options.npu_cores != cores:
        notes.append(
            f"npu_cores={options.npu_cores} was requested but NPU cores are fixed when a "
            f"model is converted; this model uses {cores if cores is not None else 'unknown'}"
        )
    if not per_run:
        notes.append(
            "runtime 1.2 fixes sampling at load: per-request temperature/top_p/top_k/"
            "penalties are ignored and max_tokens is enforced by stopping the run"
        )
    if template_source == "fallback":
        notes.append("chat format unknown from the file name: using ChatML (set chat_template)")
    return tuple(notes)
