"""The RKLLM (NPU) backend for .rkllm models. Worker process only."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from ...errors import (
    ContextLengthExceeded,
    GenerationFailed,
    InvalidImage,
    ModelHasNoVision,
    UnsupportedByModel,
)
from ...props import ModelProps
from ...requests import (
    BackendDefaults,
    ChatMessage,
    EmbedItem,
    GenerateRequest,
    LoadOptions,
    Usage,
)
from ..base import EmbedResult, EmitText, GenerateResult
from . import abi as c
from .kvcache import KvTracker, Plan
from .loader import LoadedModel, load_model
from .native import Inbox, NativeModel
from .rknn import RknnError
from .sinks import Emitter, HiddenSink, TextSink, drain
from .tokenizer import ModelTokenizer, find_tokenizer
from .tokenizer import require as require_tokenizer
from .vision import IMAGE_TAG, Embeddings, VisionEncoder, load_encoder

logger = logging.getLogger(__name__)

CANCEL_POLL_S = 0.02


def abort_until_started(native: NativeModel, inbox: Inbox, done: threading.Event) -> None:
    """rkllm_abort for the run filling ``inbox``, re-sent while it has not begun.

    rkllm_run forgets an earlier abort when it starts, so an abort sent between the
    last cancel check and that reset would be lost and the run would go on to its
    end. The runtime reports a run only once it has begun (rkllm_is_running), so an
    abort sent after it said 1 is one the run sees; until then, send it again every
    CANCEL_POLL_S until it does or the run has returned.
    """
    while not native.abort_run(inbox):
        if done.wait(CANCEL_POLL_S):
            return


@contextlib.contextmanager
def abort_watch(native: NativeModel, inbox: Inbox, cancel: threading.Event) -> Iterator[None]:
    """Abort the run filling ``inbox`` from another thread as soon as ``cancel`` is set
    (the client went away). Stop strings and the token budget abort from the emit
    thread.

    The watcher waits on ``cancel`` itself, so nothing wakes it when the run ends: it
    sees that within CANCEL_POLL_S and exits. It is not waited for (that would hold
    back the end of every reply by up to CANCEL_POLL_S); abort_run never reaches a
    later run."""
    done = threading.Event()

    def watch() -> None:
        while not cancel.wait(CANCEL_POLL_S):
            if done.is_set():
                return
        if not done.is_set():
            abort_until_started(native, inbox, done)

    threading.Thread(target=watch, name="rkllm-abort", daemon=True).start()
    try:
        yield
    finally:
        done.set()


class RkllmBackend:
    def __init__(self, defaults: BackendDefaults) -> None:
        self._defaults = defaults
        self._model: LoadedModel | None = None
        self._kv = KvTracker()
        self._tokenizer: ModelTokenizer | None = None
        self._vision: VisionEncoder | None = None

    def load(self, path: Path, options: LoadOptions) -> ModelProps:
        # The encoder first: runtime 1.2 takes its image markers at rkllm_init.
        self._vision, vision_note = load_encoder(path, self._defaults.rknn_library)
        markers = self._vision.marker_bytes if self._vision is not None else None
        try:
            self._model = load_model(path, options, self._defaults, markers)
        except BaseException:
            self._close_vision()
            raise
        assert self._model.props is not None
        self._tokenizer = find_tokenizer(path)
        if self._tokenizer is not None:
            self._kv = KvTracker(count=self._tokenizer.count)
        source = self._tokenizer.source if self._tokenizer else None
        props = self._model.props
        vision = self._vision.facts() if self._vision is not None else None
        return replace(
            props,
            vision=self._vision is not None,
            notes=props.notes + ((vision_note,) if vision_note else ()),
            details={**props.details, "tokenizer": source, "vision": vision},
        )

    # --- generate ----------------------------------------------------------------------

    def generate(
        self, request: GenerateRequest, emit: EmitText, cancel: threading.Event
    ) -> GenerateResult:
        model = self._require()
        if cancel.is_set():
            # Cancelled before the run began: an rkllm_abort now could land before
            # rkllm_run resets its state and be lost. The KV cache is left as it is.
            return GenerateResult("abort", Usage())
        images = [image.data for m in request.messages for image in m.images]
        prompt = self._prompt(model, request)
        embeddings: Embeddings | None = None
        if images:
            # The runtime's reuse of a cache holding images is not observable: start clean.
            plan = Plan(send=prompt, clear=True, reused_bytes=0)
            embeddings = self._encode_images(model, prompt, images)
            if cancel.is_set():  # the encoder takes seconds per image on a board
                return GenerateResult("abort", Usage())
        else:
            plan = self._kv.plan(prompt, model.n_ctx)
            self._check_context(plan.send if plan.clear else None, model.n_ctx)
        image_tokens = embeddings.n_image * embeddings.tokens if embeddings else 0
        if plan.clear:
            self._kv.invalidate()
            model.native.clear_kv_cache()
        kv_before = (model.native.kv_cache_size() or 0) if not plan.clear else 0
        budget = max(1, min(request.sampling.max_tokens, model.n_ctx))
        # 1.3 stops at max_new_tokens itself and keeps the KV cache usable for the next
        # turn; aborting at the budget would throw it away. 1.2 has no per-run limit, so
        # the sink aborts. The +1 on 1.3 is only a safety net for a runtime that overruns.
        per_run = model.native.abi.per_run_sampling
        inbox: Inbox = deque()
        sink = TextSink(
            request.sampling.stop, budget + per_run, lambda: model.native.abort_run(inbox)
        )
        if embeddings is not None and self._vision is not None:
            rk_input = model.make_multimodal(
                plan.send, embeddings, self._vision, request.enable_thinking
            )
        else:
            rk_input = model.make_input(plan.send, request.enable_thinking)
        infer = model.make_infer(c.INFER_GENERATE, request.sampling, budget)
        out = Emitter(inbox, sink, emit)
        try:
            with abort_watch(model.native, inbox, cancel):
                rc = model.native.run(rk_input, infer, inbox)
        finally:
            out.close()
        fits = kv_before + self._kv.estimate_tokens(plan.send) + image_tokens < model.n_ctx
        reason = self._finish_reason(sink, rc, cancel, fits, budget)
        prefill = int(sink.perf["prefill_tokens"]) if sink.perf else 0
        if embeddings is not None:
            self._kv.invalidate()  # what the cache holds is not text we can compare
        elif (reason == "stop" and not sink.stopped) or (
            reason == "length" and not sink.budget_hit
        ):
            kv_after = model.native.kv_cache_size()
            self._kv.record(plan, prompt, sink.pieces, kv_before, kv_after, prefill)
        else:
            self._kv.invalidate()
        if not sink.perf and self._tokenizer is not None:
            prefill = self._tokenizer.count(plan.send) + image_tokens  # counted
        usage = Usage(
            prompt_tokens=kv_before + prefill,
            completion_tokens=int(sink.perf["generate_tokens"]) if sink.perf else sink.tokens,
            cached_tokens=kv_before,
        )
        return GenerateResult(reason, usage, perf=sink.perf)

    def _prompt(self, model: LoadedModel, request: GenerateRequest) -> bytes:
        if request.prompt_tokens is not None:
            raise UnsupportedByModel("prompts given as token ids are not supported on the NPU")
        if request.prompt is not None:
            return request.prompt.encode()
        messages = tuple(_with_image_tags(m) for m in request.messages)
        text = model.chat_format.render(messages, request.tools, request.enable_thinking)
        return text.encode()

    def _encode_images(self, model: LoadedModel, prompt: bytes, images: list[bytes]) -> Embeddings:
        """Check the request fits, then run every image through the encoder."""
        vision = self._vision
        if vision is None:
            raise ModelHasNoVision("this model has no vision encoder", images=len(images))
        if prompt.count(IMAGE_TAG.encode()) != len(images):
            # A client's own "<image>" text would be taken for an image by the runtime.
            raise InvalidImage(f"the text of a message with images may not contain {IMAGE_TAG}")
        image_tokens = len(images) * vision.shape.tokens
        text_tokens = self._tokenizer.count(prompt) if self._tokenizer is not None else 0
        if text_tokens + image_tokens >= model.n_ctx:
            raise ContextLengthExceeded(
                f"the prompt is {text_tokens} text tokens and {image_tokens} image tokens "
                f"({len(images)} images) but the context holds {model.n_ctx}",
                prompt_tokens=text_tokens + image_tokens,
                n_ctx=model.n_ctx,
            )
        try:
            return vision.encode(images)
        except RknnError as exc:
            raise GenerationFailed(f"the vision encoder failed: {exc}") from None

    def _finish_reason(
        self, sink: TextSink, rc: int, cancel: threading.Event, fits: bool, budget: int
    ) -> Any:
        if cancel.is_set():
            return "abort"
        if sink.failed or (rc != 0 and not sink.stopped and not sink.budget_hit):
            self._kv.invalidate()
            if not sink.pieces and not fits:
                raise ContextLengthExceeded(
                    "the NPU runtime rejected the prompt: it does not fit the context",
                )
            raise GenerationFailed(f"the NPU runtime reported an error during generation ({rc})")
        if sink.stopped:
            return "stop"
        if sink.budget_hit or sink.tokens >= budget:
            return "length"
        return "stop"

    def _check_context(self, whole_prompt: bytes | None, n_ctx: int) -> None:
        """With the model's tokenizer a prompt that cannot fit is refused before the
        run (the runtime would fail it with a bare error code)."""
        if whole_prompt is None or self._tokenizer is None:
            return
        tokens = self._tokenizer.count(whole_prompt)
        if tokens >= n_ctx:
            raise ContextLengthExceeded(
                f"the prompt is {tokens} tokens but the context holds {n_ctx}",
                prompt_tokens=tokens,
                n_ctx=n_ctx,
            )

    # --- tokens --------------------------------------------------------------------------

    def encode_prompt(self, request: GenerateRequest) -> list[int]:
        """The rendered prompt through the tokenizer, with its BOS (the runtime adds
        one as it tokenizes)."""
        prompt = self._prompt(self._require(), request).decode("utf-8", errors="replace")
        return require_tokenizer(self._tokenizer).encode(prompt, add_bos=True)

    def encode(self, text: str, add_bos: bool, special: bool) -> list[int]:
        return require_tokenizer(self._tokenizer).encode(text, add_bos)

    def decode(self, tokens: list[int], special: bool) -> str:
        return require_tokenizer(self._tokenizer).decode(tokens, special)

    # --- embed -------------------------------------------------------------------------

    def embed(self, texts: list[EmbedItem]) -> EmbedResult:
        model = self._require()
        if not all(isinstance(text, str) for text in texts):
            raise UnsupportedByModel(
                "embedding inputs given as token ids are not supported on the NPU"
            )
        self._kv.invalidate()
        vectors: list[list[float]] = []
        tokens = 0
        for text in texts:
            model.native.clear_kv_cache()
            sink = HiddenSink()
            rk_input = model.make_input(str(text).encode(), None)
            infer = model.make_infer(c.INFER_GET_LAST_HIDDEN_LAYER, None, 1, keep_history=0)
            inbox: Inbox = deque()
            rc = model.native.run(rk_input, infer, inbox, hidden=True)
            drain(inbox, sink)  # pooled here, after the run, not on the runtime's thread
            if rc != 0 or sink.failed or sink.vector is None:
                raise GenerationFailed("the NPU runtime returned no hidden states for an input")
            vectors.append(sink.vector)
            tokens += sink.tokens
        return EmbedResult(vectors=vectors, prompt_tokens=tokens)

    # --- misc --------------------------------------------------------------------------

    def _require(self) -> LoadedModel:
        if self._model is None:
            raise GenerationFailed("no model is loaded in this worker")
        return self._model

    def close(self) -> None:
        if self._model is not None:
            self._model.native.destroy()
            self._model = None
        self._close_vision()

    def _close_vision(self) -> None:
        if self._vision is not None:
            self._vision.close()
            self._vision = None


def _with_image_tags(message: ChatMessage) -> ChatMessage:
    """One <image> per image, before the message's text: where RKLLM puts each image's
    markers and embeddings."""
    if not message.images:
        return message
    return replace(message, content=IMAGE_TAG * len(message.images) + message.content)
