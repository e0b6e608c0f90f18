"""What a load needs before a worker starts: checks, backend defaults, draft files.

The manager asks these questions of the catalogue and the live config; keeping
them here leaves the manager with the lifecycle itself (who holds the model, in
which state, for whom).
"""

from __future__ import annotations

from datetime import UTC, datetime

from .catalog.entries import ModelEntry
from .catalog.loras import lora_dir
from .catalog.registry import ModelRegistry
from .config import LiveConfig
from .errors import (
    DraftIncompatible,
    InvalidParams,
    LoadFailed,
    ModelHasNoVision,
    RkllmdError,
)
from .props import ModelProps
from .requests import BackendDefaults, GenerateRequest, LoadOptions
from .views import LoadFailure


def check_options(entry: ModelEntry, options: LoadOptions) -> None:
    """Refuse what the catalogue already knows cannot load, before anything is unloaded."""
    limit = entry.meta.context_length
    if options.ctx_size and limit and options.ctx_size > limit:
        raise LoadFailed(
            f"ctx_size {options.ctx_size} exceeds the model's limit of {limit} tokens",
            limit=limit,
        )
    if entry.format != "gguf" and (options.draft_model or options.lookup_ngram):
        raise DraftIncompatible(
            f"speculative decoding needs llama.cpp: {entry.id} runs on the NPU runtime, "
            "which has no draft support"
        )


def load_failure(entry: ModelEntry, exc: Exception) -> LoadFailure:
    """What status shows about a failed load (never an internal message)."""
    if isinstance(exc, RkllmdError):
        return LoadFailure(entry.id, exc.code, exc.message, datetime.now(UTC))
    return LoadFailure(entry.id, "internal_error", "the load failed", datetime.now(UTC))


def check_supported(request: GenerateRequest, model_id: str, props: ModelProps) -> None:
    """Refuse what the resident model's backend cannot do, before it starts."""
    if request.n > props.slots:
        raise InvalidParams(
            f"n={request.n} needs {request.n} parallel generations; "
            f"{model_id} runs {props.slots} at once",
            param="n",
        )
    images = len(request.images)
    if images and not props.vision:
        raise ModelHasNoVision(
            f"{model_id} cannot see images; send the request without them or use a "
            "model with a vision projector or encoder",
            model=model_id,
            images=images,
        )
    if request.logprobs is not None and not props.logprobs:
        raise InvalidParams(
            f"log-probabilities are not available on the {props.backend} backend",
            param="logprobs",
        )


class LoadPlanner:
    """Backend defaults and model files named by the config, read per load."""

    def __init__(self, config: LiveConfig, registry: ModelRegistry) -> None:
        self._live = config
        self._registry = registry

    def defaults(self, fmt: str = "gguf") -> BackendDefaults:
        config = self._live.current
        if fmt == "rkllm":
            npu = config.rkllm
            return BackendDefaults(
                ctx_size=npu.ctx_size,
                threads=npu.threads,
                chat_template=npu.chat_template,
                library=str(npu.library) if npu.library else None,
                rknn_library=str(npu.rknn_library) if npu.rknn_library else None,
                runtime_version=npu.version,
                lora_dir=str(lora_dir(config.models_dir)),
            )
        cpu = config.llamacpp
        return BackendDefaults(
            ctx_size=cpu.ctx_size,
            threads=cpu.threads,
            batch_size=cpu.batch_size,
            lora_dir=str(lora_dir(config.models_dir)),
            parallel=cpu.parallel,
            draft_model=self.draft_path(cpu.draft_model),
            lookup_ngram=cpu.lookup_ngram,
            draft_tokens=cpu.draft_tokens,
        )

    def draft_path(self, name: str | None) -> str | None:
        """The file of a draft model named in config or a load request."""
        if not name:
            return None
        entry = self._registry.resolve(name)
        if entry.format != "gguf":
            raise DraftIncompatible(f"the draft model {entry.id} is not a GGUF model")
        return str(entry.path)

    def pinned_by_config(self, entry: ModelEntry) -> bool:
        """Whether ``generation.pin`` names ``entry`` (a name that resolves to nothing: no)."""
        name = self._live.current.generation.pin
        if not name:
            return False
        try:
            return self._registry.resolve(name).path == entry.path
        except RkllmdError:
            return False
