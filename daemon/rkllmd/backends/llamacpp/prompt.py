"""From a request to prompt tokens: the model's chat template, then the tokenizer."""

from __future__ import annotations

from typing import Any

from ...errors import GenerationFailed, LoadFailed
from ...requests import GenerateRequest

# Used only when a model carries no chat template and none was given.
FALLBACK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class PromptBuilder:
    def __init__(self, lib: Any, model: Any, override: str | None) -> None:
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
        if request.prompt is not None:
            return list(self._model.tokenize(request.prompt.encode(), True, False))
        messages = [m.to_template() for m in request.messages]
        extra: dict[str, Any] = {}
        if request.enable_thinking is not None:
            extra["enable_thinking"] = request.enable_thinking
        try:
            rendered = self._formatter(
                messages=messages, tools=list(request.tools) or None, **extra
            )
        except Exception as exc:  # template code can raise anything (raise_exception)
            raise GenerationFailed(f"the chat template rejected the conversation: {exc}") from None
        return list(
            self._model.tokenize(rendered.prompt.encode(), not rendered.added_special, True)
        )
