"""llama.cpp backend for .gguf models: the worker's Backend over the batching engine.

The weights, tokenizer and metadata come from llama-cpp-python's model wrapper;
generation runs on our own context with N sequences (engine.py), embeddings on a
second context in embedding mode. Worker process only.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ...errors import ContextLengthExceeded, InvalidParams, LoadFailed, ModelHasNoVision
from ...props import Facts, ModelProps
from ...requests import BackendDefaults, EmbedItem, GenerateRequest, LoadOptions
from ..base import EmbedResult, Emit, GenerateResult, pick_option
from ..gguf_lora import adapter_paths, apply_adapters
from .draft import Speculation
from .engine import Engine
from .native import Context, Pieces
from .prompt import PromptBuilder, vocabulary_ids
from .sampling import SamplerSpec, Vocabulary
from .sequence import Job, MediaChunk
from .setup import (
    DEFAULT_BATCH,
    DEFAULT_CTX,
    DEFAULT_PARALLEL,
    check_gguf_header,
    default_threads,
    fit_parallel,
    import_llama_cpp,
    open_model,
)
from .vision import MediaPrompt, Projector

logger = logging.getLogger(__name__)


class LlamaCppBackend:
    def __init__(self, defaults: BackendDefaults) -> None:
        self._defaults = defaults
        self._lib = import_llama_cpp()
        self._model: Any = None
        self._ctx: Context | None = None
        self._engine: Engine | None = None
        self._prompts: PromptBuilder | None = None
        self._embedder: Any = None
        self._projector: Projector | None = None
        self._threads = 1
        # Freed after the context and before the model (LoRA adapters).
        self._cleanups: list[Callable[[], None]] = []

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
        # No automatic number of sequences: 0 falls through to the next layer.
        parallel = pick_option(options.parallel, defaults.parallel, DEFAULT_PARALLEL, None)
        self._threads = threads
        self._model = open_model(self._lib, path)
        train_ctx = int(self._model.n_ctx_train())
        try:
            if options.ctx_size and train_ctx > 0 and options.ctx_size > train_ctx:
                raise LoadFailed(
                    f"ctx_size {options.ctx_size} exceeds the model's limit of {train_ctx} tokens",
                    limit=train_ctx,
                )
            seq_ctx = ctx_size or train_ctx
            n_seq = fit_parallel(self._lib, self._model, parallel, seq_ctx)
            template = options.chat_template or defaults.chat_template
            self._prompts = PromptBuilder(self._lib, self._model, template)
            self._ctx = Context(
                self._lib,
                self._model.model,
                n_ctx=seq_ctx * n_seq,
                n_seq=n_seq,
                n_batch=batch,
                threads=threads,
            )
            adapters = adapter_paths(defaults.lora_dir, options.loras)
            apply_adapters(
                self._lib, self._model.model, self._ctx.ptr, adapters, self._cleanups.append
            )
            self._projector = Projector.pair(self._lib, path, self._model, threads)
            speculation = Speculation.choose(options, defaults)
            drafter = speculation.open(self._lib, self._model, seq_ctx, n_seq, batch, threads)
        except LoadFailed:
            self.close()
            raise
        vocab = self._model.vocab
        self._engine = Engine(
            self._ctx,
            Vocabulary(self._lib, vocab, int(self._model.n_vocab())),
            Pieces(self._lib, vocab),
            lambda token: bool(self._lib.llama_vocab_is_eog(vocab, token)),
            drafter=drafter,
            draft_max=speculation.tokens,
        )
        return self._props(train_ctx, threads, batch, speculation)

    def _props(
        self, train_ctx: int, threads: int, batch: int, speculation: Speculation
    ) -> ModelProps:
        assert self._ctx is not None and self._prompts is not None
        meta = self._model.metadata()
        details: Facts = {
            "architecture": meta.get("general.architecture"),
            "name": meta.get("general.name"),
            "n_vocab": int(self._model.n_vocab()),
            "n_params": int(self._model.n_params()),
            "batch_size": batch,
            "n_ctx_total": self._ctx.n_ctx,
        }
        if self._projector is not None:
            details["projector"] = self._projector.path.name
        if speculation.kind:
            details["speculative"] = speculation.kind
            details["draft_tokens"] = speculation.tokens
        return ModelProps(
            backend="llama.cpp",
            backend_version=str(getattr(self._lib, "__version__", "unknown")),
            n_ctx=self._ctx.n_ctx_seq,  # what one generation can use
            n_ctx_train=train_ctx,
            threads=threads,
            chat_template=self._prompts.template,
            chat_template_source=self._prompts.source,
            slots=self._ctx.n_seq,
            logprobs=True,
            grammar=True,
            vision=self._projector is not None,
            details=details,
        )

    # --- generate ------------------------------------------------------------------

    def generate(
        self, request: GenerateRequest, emit: Emit, cancel: threading.Event
    ) -> GenerateResult:
        assert self._engine is not None and self._prompts is not None
        if request.n > self._engine.n_slots:
            raise InvalidParams(
                f"n={request.n} needs {request.n} sequences; this model runs "
                f"{self._engine.n_slots} at once (llamacpp.parallel)"
            )
        media = self._media_prompt(request)
        try:
            return self._generate(request, media, emit, cancel)
        finally:
            if media is not None:
                media.close()

    def _generate(
        self,
        request: GenerateRequest,
        media: MediaPrompt | None,
        emit: Emit,
        cancel: threading.Event,
    ) -> GenerateResult:
        assert self._engine is not None and self._prompts is not None
        chunks: dict[int, MediaChunk] = {} if media is None else media.media
        tokens = self._prompts.tokens(request) if media is None else media.tokens
        n_ctx = self._engine.n_ctx_seq
        # Image tokens count: a prompt whose images do not fit is refused here,
        # before anything is encoded or decoded.
        if len(tokens) >= n_ctx:
            raise ContextLengthExceeded(
                f"the prompt is {len(tokens)} tokens but the context holds {n_ctx}",
                prompt_tokens=len(tokens),
                n_ctx=n_ctx,
            )
        s = request.sampling
        job = Job(
            prompt=tokens,
            specs=_specs(request),
            budget=min(s.max_tokens, n_ctx - len(tokens)),
            emit=emit,
            cancel=cancel,
            stop=s.stop,
            ignore_eos=s.ignore_eos,
            logprobs=request.logprobs,
            media=chunks,
        )
        if job.budget <= 0:
            job.usage.prompt_tokens = len(tokens)
            return GenerateResult(finish_reason="length", usage=job.usage)
        self._engine.run(job)
        result = _result(job)
        if media is not None:
            result = replace(result, perf={**(result.perf or {}), **media.times.perf()})
        return result

    def _media_prompt(self, request: GenerateRequest) -> MediaPrompt | None:
        """The prompt through libmtmd when the request carries images, else None."""
        images = request.images
        if not images:
            return None
        if self._projector is None:
            raise ModelHasNoVision("this model cannot see images", images=len(images))
        assert self._prompts is not None and self._ctx is not None
        text, add_special = self._prompts.render(request, self._projector.marker)
        return self._projector.prompt(text, add_special, images, self._ctx.n_batch)

    # --- tokens --------------------------------------------------------------------

    def encode_prompt(self, request: GenerateRequest) -> list[int]:
        """The prompt's ids; an image's cells are OPAQUE (-1), one per image token."""
        assert self._prompts is not None
        media = self._media_prompt(request)
        if media is None:
            return self._prompts.tokens(request)
        media.close()
        return media.tokens

    def encode(self, text: str, add_bos: bool, special: bool) -> list[int]:
        return list(self._model.tokenize(text.encode(), add_bos, special))

    def decode(self, tokens: list[int], special: bool) -> str:
        check_token_ids(tokens, int(self._model.n_vocab()))
        return bytes(self._model.detokenize(tokens, special)).decode("utf-8", errors="replace")

    # --- embed ---------------------------------------------------------------------

    def embed(self, items: list[EmbedItem]) -> EmbedResult:
        embedder = self._embedder or self._open_embedder()
        n_ctx = int(embedder.n_ctx())
        # Counted first so that an input over the context is refused before any decode.
        # Llama.embed tokenizes texts again; that costs microseconds next to the decode,
        # and keeps us on the library's public API.
        tokens = [
            embedder.tokenize(i.encode(), add_bos=True, special=False)
            if isinstance(i, str)
            else vocabulary_ids(i, int(self._model.n_vocab()))
            for i in items
        ]
        counts = [len(t) for t in tokens]
        if max(counts, default=0) > n_ctx:
            raise ContextLengthExceeded(
                f"an input is {max(counts)} tokens but the context holds {n_ctx}", n_ctx=n_ctx
            )
        # Texts in one batched call (as Llama.embed batches them), token ids one by one.
        texts = [item for item in items if isinstance(item, str)]
        batched = iter(embedder.embed(texts, normalize=True) if texts else [])
        vectors = [
            next(batched) if isinstance(item, str) else _embed_ids(self._lib, embedder, ids)
            for item, ids in zip(items, tokens, strict=True)
        ]
        return EmbedResult(
            vectors=[list(map(float, v)) for v in vectors], prompt_tokens=sum(counts)
        )

    def _open_embedder(self) -> Any:
        # A second model handle in embedding mode; the weights are mmap'ed, so the
        # two share memory. Mean pooling turns a causal LM into a sentence encoder.
        assert self._ctx is not None
        self._embedder = self._lib.Llama(
            model_path=self._model.path_model,
            embedding=True,
            pooling_type=self._lib.LLAMA_POOLING_TYPE_MEAN,
            n_ctx=min(self._ctx.n_ctx_seq, 2048),
            n_threads=self._threads,
            n_threads_batch=self._threads,
            n_batch=2048,
            verbose=False,
        )
        return self._embedder

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
        if self._projector is not None:
            self._projector.close()
        if self._ctx is not None:
            self._ctx.close()
        while self._cleanups:
            self._cleanups.pop()()
        for handle in (self._embedder, self._model):
            if handle is not None:
                handle.close()
        self._engine = self._ctx = self._embedder = self._model = self._projector = None


def check_token_ids(tokens: list[int], n_vocab: int) -> None:
    """llama.cpp reads an out-of-range id outside its tables: refuse it first."""
    bad = [t for t in tokens if not 0 <= t < n_vocab]
    if bad:
        raise InvalidParams(f"token ids must be in 0..{n_vocab - 1}; got {bad[0]}", param="tokens")


def _specs(request: GenerateRequest) -> list[SamplerSpec]:
    """One sampler per choice; choices differ by seed (consecutive from the request's)."""
    s = request.sampling
    seed = s.seed if s.seed is not None else random.getrandbits(32)
    return [
        SamplerSpec(
            temperature=s.temperature,
            top_k=s.top_k,
            top_p=s.top_p,
            min_p=s.min_p,
            repeat_penalty=s.repeat_penalty,
            presence_penalty=s.presence_penalty,
            frequency_penalty=s.frequency_penalty,
            seed=(seed + index) % 2**32,
            logit_bias=s.logit_bias,
            grammar=s.grammar,
        )
        for index in range(request.n)
    ]


def _result(job: Job) -> GenerateResult:
    reasons = tuple(job.finish) or ("abort",) * job.n
    perf: dict[str, Any] | None = None
    if job.draft_proposed:
        perf = {"draft_tokens": job.draft_proposed, "draft_accepted": job.draft_accepted}
    return GenerateResult(
        finish_reason=reasons[0],  # type: ignore[arg-type]
        usage=job.usage,
        perf=perf,
        choices=reasons if job.n > 1 else (),  # type: ignore[arg-type]
    )


def _embed_ids(lib: Any, embedder: Any, ids: list[int]) -> list[float]:
    """The pooled, normalised embedding of token ids (Llama.embed takes only text):
    the same steps as Llama.embed for one sequence."""
    embedder._batch.reset()
    embedder._batch.add_sequence(ids, 0, True)
    embedder._ctx.kv_cache_clear()
    try:
        embedder._ctx.decode(embedder._batch)
        size = embedder.n_embd()
        vector = [float(v) for v in lib.llama_get_embeddings_seq(embedder._ctx.ctx, 0)[:size]]
    finally:
        embedder._batch.reset()
        embedder._ctx.kv_cache_clear()
    norm = math.sqrt(math.fsum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]
