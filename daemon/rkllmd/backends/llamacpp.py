"""llama.cpp backend (llama-cpp-python) for .gguf models. Worker process only."""

from __future__ import annotations

import logging
import os
import random
import threading
from pathlib import Path
from typing import Any

from ..errors import (
    BackendUnavailable,
    ContextLengthExceeded,
    GenerationFailed,
    InvalidParams,
    LoadFailed,
)
from ..props import ModelProps
from ..requests import BackendDefaults, GenerateRequest, LoadOptions, Usage
from .base import EmbedResult, EmitText, GenerateResult, pick_option
from .gguf_lora import adapter_paths, apply_adapters
from .textstream import TextStream

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
DEFAULT_CTX = 4096
DEFAULT_BATCH = 512
# Used only when a model carries no chat template and none was given.
FALLBACK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
        import llama_cpp.llama_chat_format
    except ImportError:
        raise BackendUnavailable(
            "the llama.cpp backend (llama-cpp-python) is not installed"
        ) from None
    return llama_cpp


def check_gguf_header(path: Path) -> None:
    with path.open("rb") as handle:
        head = handle.read(8)
    if head[:4] != GGUF_MAGIC:
        raise LoadFailed("the file is not a GGUF model (bad magic bytes)")
    if len(head) < 8 or int.from_bytes(head[4:8], "little") not in (2, 3):
        raise LoadFailed("unsupported GGUF version")


class LlamaCppBackend:
    def __init__(self, defaults: BackendDefaults) -> None:
        self._defaults = defaults
        self._lib = _import_llama_cpp()
        self._llm: Any = None
        self._embedder: Any = None
        self._formatter: Any = None
        self._threads = 1

    # --- load ----------------------------------------------------------------------

    def load(self, path: Path, options: LoadOptions) -> ModelProps:
        check_gguf_header(path)
        defaults = self._defaults
        # 0 is a setting for both: llama.cpp itself reads n_ctx=0 as the model's
        # training context, and threads=0 is half the cores (see default_threads).
        ctx_size = pick_option(options.ctx_size, defaults.ctx_size, DEFAULT_CTX)
        auto = default_threads()
        threads = pick_option(options.threads, defaults.threads, auto, zero_means=auto)
        batch = pick_option(options.batch_size, defaults.batch_size, DEFAULT_BATCH)
        self._threads = threads
        try:
            self._llm = self._lib.Llama(
                model_path=str(path),
                n_ctx=ctx_size,
                n_threads=threads,
                n_threads_batch=threads,
                n_batch=batch,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            logger.error("llama.cpp failed to load the model: %s", exc)
            raise LoadFailed(
                "llama.cpp could not load the model (corrupt, truncated or unsupported file)"
            ) from None
        try:
            adapters = adapter_paths(defaults.lora_dir, options.loras)
            apply_adapters(
                self._lib,
                self._llm._model.model,
                self._llm._ctx.ctx,
                adapters,
                self._llm._stack.callback,
            )
        except LoadFailed:
            self.close()
            raise
        train_ctx = int(self._llm._model.n_ctx_train())
        if options.ctx_size and train_ctx > 0 and options.ctx_size > train_ctx:
            self.close()
            raise LoadFailed(
                f"ctx_size {options.ctx_size} exceeds the model's limit of {train_ctx} tokens",
                limit=train_ctx,
            )
        source, template = self._template_for(options.chat_template)
        self._formatter = self._make_formatter(template)
        return self._props(train_ctx, threads, batch, source, template)

    def _template_for(self, override: str | None) -> tuple[str, str]:
        if override:
            return "override", override
        own = self._llm.metadata.get("tokenizer.chat_template")
        if own:
            return "model", str(own)
        return "fallback", FALLBACK_TEMPLATE

    def _make_formatter(self, template: str) -> Any:
        model = self._llm._model
        eos, bos = self._llm.token_eos(), self._llm.token_bos()
        try:
            return self._lib.llama_chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=model.token_get_text(eos) if eos != -1 else "",
                bos_token=model.token_get_text(bos) if bos != -1 else "",
            )
        except Exception as exc:  # jinja2 raises many types for a bad template
            self.close()
            raise LoadFailed(f"the chat template does not compile: {exc}") from None

    def _props(
        self, train_ctx: int, threads: int, batch: int, source: str, template: str
    ) -> ModelProps:
        meta = self._llm.metadata
        return ModelProps(
            backend="llama.cpp",
            backend_version=str(getattr(self._lib, "__version__", "unknown")),
            n_ctx=int(self._llm.n_ctx()),
            n_ctx_train=train_ctx,
            threads=threads,
            chat_template=template,
            chat_template_source=source,
            details={
                "architecture": meta.get("general.architecture"),
                "name": meta.get("general.name"),
                "n_vocab": int(self._llm.n_vocab()),
                "n_params": int(self._llm._model.n_params()),
                "batch_size": batch,
            },
        )

    # --- generate ------------------------------------------------------------------

    def generate(
        self, request: GenerateRequest, emit: EmitText, cancel: threading.Event
    ) -> GenerateResult:
        tokens = self._prompt_tokens(request)
        n_ctx = int(self._llm.n_ctx())
        if len(tokens) >= n_ctx:
            raise ContextLengthExceeded(
                f"the prompt is {len(tokens)} tokens but the context holds {n_ctx}",
                prompt_tokens=len(tokens),
                n_ctx=n_ctx,
            )
        usage = Usage(prompt_tokens=len(tokens), cached_tokens=self._cached_prefix(tokens))
        if not self._prefill(tokens, usage.cached_tokens, cancel):
            return GenerateResult(finish_reason="abort", usage=usage)
        budget = min(request.sampling.max_tokens, n_ctx - len(tokens))
        reason = self._sample_loop(tokens, request, budget, usage, emit, cancel)
        return GenerateResult(finish_reason=reason, usage=usage)

    def _prefill(self, tokens: list[int], reuse: int, cancel: threading.Event) -> bool:
        """Evaluate all but the last prompt token batch by batch; False if cancelled.

        llama.cpp cannot be interrupted inside a decode, and llama-cpp-python's
        generate() evaluates the whole prompt in one call: a long prompt would
        outlive any abort. Batches bound the wait. generate() then finds every
        token but the last in the KV cache and evaluates just that one.
        """
        llm = self._llm
        if reuse < llm.n_tokens and not llm._ctx.kv_cache_seq_rm(-1, reuse, -1):
            reuse = 0  # this model cannot drop a cache tail: start over
        if reuse == 0:
            llm.reset()
        else:
            llm.n_tokens = reuse
        batch = int(llm.n_batch)
        for start in range(reuse, len(tokens) - 1, batch):
            if cancel.is_set():
                return False
            llm.eval(tokens[start : min(start + batch, len(tokens) - 1)])
        return not cancel.is_set()

    def _prompt_tokens(self, request: GenerateRequest) -> list[int]:
        if request.prompt is not None:
            return list(self._llm.tokenize(request.prompt.encode(), add_bos=True, special=False))
        rendered = self._rendered(request)
        return list(
            self._llm.tokenize(
                rendered.prompt.encode(), add_bos=not rendered.added_special, special=True
            )
        )

    def _rendered(self, request: GenerateRequest) -> Any:
        messages = [m.to_template() for m in request.messages]
        extra: dict[str, Any] = {}
        if request.enable_thinking is not None:
            extra["enable_thinking"] = request.enable_thinking
        try:
            return self._formatter(messages=messages, tools=list(request.tools) or None, **extra)
        except Exception as exc:  # template code can raise anything (raise_exception)
            raise GenerationFailed(f"the chat template rejected the conversation: {exc}") from None

    # --- tokens --------------------------------------------------------------------

    def encode_prompt(self, request: GenerateRequest) -> list[int]:
        return self._prompt_tokens(request)

    def encode(self, text: str, add_bos: bool, special: bool) -> list[int]:
        return list(self._llm.tokenize(text.encode(), add_bos=add_bos, special=special))

    def decode(self, tokens: list[int], special: bool) -> str:
        check_token_ids(tokens, int(self._llm.n_vocab()))
        raw = self._llm.detokenize(tokens, special=special)
        return bytes(raw).decode("utf-8", errors="replace")

    def _cached_prefix(self, tokens: list[int]) -> int:
        """Prompt tokens llama.cpp will reuse from the KV cache (it keeps the prefix)."""
        resident = self._llm._input_ids[: self._llm.n_tokens]
        same = 0
        for old, new in zip(resident, tokens, strict=False):
            if old != new:
                break
            same += 1
        # llama.cpp always re-evaluates at least one token to get fresh logits.
        return min(same, len(tokens) - 1)

    def _sample_loop(
        self,
        tokens: list[int],
        request: GenerateRequest,
        budget: int,
        usage: Usage,
        emit: EmitText,
        cancel: threading.Event,
    ) -> Any:
        s = request.sampling
        self._llm.set_seed(s.seed if s.seed is not None else random.getrandbits(32))
        text = TextStream(s.stop)
        vocab = self._llm._model.vocab
        if budget <= 0:
            return "length"
        for token in self._llm.generate(
            tokens,
            top_k=s.top_k,
            top_p=s.top_p,
            min_p=s.min_p,
            temp=s.temperature,
            repeat_penalty=s.repeat_penalty,
            presence_penalty=s.presence_penalty,
            frequency_penalty=s.frequency_penalty,
        ):
            if cancel.is_set():
                return "abort"
            if not s.ignore_eos and self._lib.llama_vocab_is_eog(vocab, token):
                break
            usage.completion_tokens += 1
            piece = text.feed(self._llm.detokenize([token]))
            if piece:
                emit(piece)
            if text.stopped:
                return "stop"
            if usage.completion_tokens >= budget:
                _emit_rest(text, emit)
                return "length"
        _emit_rest(text, emit)
        return "stop"

    # --- embed ---------------------------------------------------------------------

    def embed(self, texts: list[str]) -> EmbedResult:
        embedder = self._embedder or self._open_embedder()
        n_ctx = int(embedder.n_ctx())
        # Counted first so that an input over the context is refused before any decode.
        # Llama.embed tokenizes again; that costs microseconds next to the decode, and
        # keeps us on the library's public API.
        counts = [len(embedder.tokenize(t.encode(), add_bos=True, special=False)) for t in texts]
        if max(counts, default=0) > n_ctx:
            raise ContextLengthExceeded(
                f"an input is {max(counts)} tokens but the context holds {n_ctx}", n_ctx=n_ctx
            )
        vectors = embedder.embed(texts, normalize=True)
        return EmbedResult(
            vectors=[list(map(float, v)) for v in vectors], prompt_tokens=sum(counts)
        )

    def _open_embedder(self) -> Any:
        # A second context in embedding mode; the weights are mmap'ed, so the
        # two share memory. Mean pooling turns a causal LM into a sentence encoder.
        self._embedder = self._lib.Llama(
            model_path=self._llm.model_path,
            embedding=True,
            pooling_type=self._lib.LLAMA_POOLING_TYPE_MEAN,
            n_ctx=min(int(self._llm.n_ctx()), 2048),
            n_threads=self._threads,
            n_threads_batch=self._threads,
            n_batch=2048,
            verbose=False,
        )
        return self._embedder

    def close(self) -> None:
        for llm in (self._embedder, self._llm):
            if llm is not None:
                llm.close()
        self._llm = self._embedder = None


def check_token_ids(tokens: list[int], n_vocab: int) -> None:
    """llama.cpp reads an out-of-range id outside its tables: refuse it first."""
    bad = [t for t in tokens if not 0 <= t < n_vocab]
    if bad:
        raise InvalidParams(f"token ids must be in 0..{n_vocab - 1}; got {bad[0]}", param="tokens")


def _emit_rest(text: TextStream, emit: EmitText) -> None:
    rest = text.finish()
    if rest:
        emit(rest)


def default_threads() -> int:
    """Half the cores: decode is memory-bound, so more threads rarely help, and a
    core left free keeps the daemon and its clients from stalling llama.cpp's
    spinning threads (first-token latency doubled on 2 cores with all of them).
    On an RK3588 this is 4, the number of big cores."""
    return max(1, (os.cpu_count() or 1) // 2)
