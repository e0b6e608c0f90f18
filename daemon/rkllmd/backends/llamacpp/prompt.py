"""From a request to prompt tokens: the model's chat template, then the tokenizer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...errors import GenerationFailed, LoadFailed, UnsupportedByModel
from ...requests import ChatMessage, GenerateRequest

# Used only when a model carries no chat template and none was given.
FALLBACK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class PromptBuilder:
    def __init__(self, lib: Any, model: Any, override: str | None) -> None:
        self._lib = lib
        self._model = model
        self.source, self.template = self._template_for(override)
        eos, bos = model.token_eos(), model.token_bos()
        try:
            self._formatter = lib.llama_chat_format.Jinja2ChatFormatter(
                template=self.template,
                eos_token=model.token_get_text(eos) if eos != -1 else "",
                bos_token=model.token_get_text(bos) if bos != -1 else "",
            )
        except Exception as exc:  # jinja2 raises many types for a bad template
            raise LoadFailed(f"the chat template does not compile: {exc}") from None

    def _template_for(self, override: str | None) -> tuple[str, str]:
        if override:
            return "override", override
        own = self._model.metadata().get("tokenizer.chat_template")
        if own:
            return "model", str(own)
        return "fallback", FALLBACK_TEMPLATE

    def tokens(self, request: GenerateRequest) -> list[int]:
        if request.suffix is not None:
            return self._fill_in_middle(request.prompt or "", request.suffix)
        if request.prompt_tokens is not None:
            return vocabulary_ids(request.prompt_tokens, int(self._model.n_vocab()))
        if request.prompt is not None:
            return list(self._model.tokenize(request.prompt.encode(), True, False))
        text, add_special = self.render(request)
        return list(self._model.tokenize(text.encode(), add_special, True))

    def render(self, request: GenerateRequest, marker: str | None = None) -> tuple[str, bool]:
        """The conversation through the chat template, and whether the tokenizer
        still has to add the special tokens. With ``marker``, each image of a message
        is that marker, before the message's text (a plain string: text-only
        templates take it as they take any text)."""
        if marker is None:
            messages = [m.to_template() for m in request.messages]
        else:
            messages = [with_markers(m, marker) for m in request.messages]
        extra: dict[str, Any] = {}
        if request.enable_thinking is not None:
            extra["enable_thinking"] = request.enable_thinking
        try:
            rendered = self._formatter(
                messages=messages, tools=list(request.tools) or None, **extra
            )
        except Exception as exc:  # template code can raise anything (raise_exception)
            raise GenerationFailed(f"the chat template rejected the conversation: {exc}") from None
        return str(rendered.prompt), not rendered.added_special

    def _fill_in_middle(self, prefix: str, suffix: str) -> list[int]:
        """Prefix-suffix-middle order with the model's own FIM tokens."""
        lib, vocab = self._lib, self._model.vocab
        pre, suf, mid = (
            int(f(vocab))
            for f in (lib.llama_vocab_fim_pre, lib.llama_vocab_fim_suf, lib.llama_vocab_fim_mid)
        )
        if min(pre, suf, mid) < 0:
            raise UnsupportedByModel(
                "suffix needs a model with fill-in-the-middle tokens; this one has none",
                param="suffix",
            )

        def tokens(text: str) -> list[int]:
            return list(self._model.tokenize(text.encode(), False, False))

        bos = int(self._model.token_bos())
        return [*([bos] if bos >= 0 else []), pre, *tokens(prefix), suf, *tokens(suffix), mid]


def with_markers(message: ChatMessage, marker: str) -> dict[str, Any]:
    """The message for the template with one ``marker`` per image before its text; a
    marker the client typed is removed (it would stand for an image it did not send)."""
    data = message.to_template()
    text = message.content.replace(marker, "")
    if message.images:
        text = marker * len(message.images) + ("\n" + text if text else "")
    data["content"] = text
    return data


def vocabulary_ids(tokens: Sequence[int], n_vocab: int) -> list[int]:
    """Token ids given by a client, each checked against the model's vocabulary."""
    for token in tokens:
        if not 0 <= token < n_vocab:
            raise UnsupportedByModel(
                f"token id {token} is outside the vocabulary (0..{n_vocab - 1})"
            )
    return list(tokens)
