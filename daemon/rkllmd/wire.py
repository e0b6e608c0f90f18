"""Wire-schema pieces both skins share: the sampling fields and the embedding input.

The control socket (strict: an admin typo must fail) and the HTTP API (lenient about
unknown fields, as OpenAI clients send extras) differ in their model config, not in
what a sampling field means or which range it has: both inherit these fields, and
``to_sampling`` is the one mapping from them to the domain's ``Sampling``.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, Field, StrictBool

from .requests import Sampling

T = TypeVar("T")


def _json_number(value: Any) -> Any:
    """JSON Schema says "5" and true are not numbers; pydantic's lax mode would take them."""
    if isinstance(value, str | bool):
        raise ValueError("must be a JSON number")
    return value


NUMBER = BeforeValidator(_json_number)  # after Field(...), or the schema loses its bounds

StopField = (
    Annotated[str, Field(min_length=1, max_length=256)]
    | Annotated[list[Annotated[str, Field(min_length=1, max_length=256)]], Field(max_length=16)]
    | None
)

# An empty text has nothing to embed (llama.cpp fails on it): refused as OpenAI does.
EmbedText = Annotated[str, Field(min_length=1, max_length=1_048_576)]
EmbedInput = EmbedText | Annotated[list[EmbedText], Field(min_length=1, max_length=256)]


class SamplingFields(BaseModel):
    """Every field may be null, and null means "not set" (the domain default applies):
    clients that serialise unset fields as null must be served like those that omit them."""

    max_tokens: Annotated[int, Field(ge=1, le=1_048_576), NUMBER] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0), NUMBER] | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0), NUMBER] | None = None
    top_k: Annotated[int, Field(ge=0, le=1000), NUMBER] | None = None
    min_p: Annotated[float, Field(ge=0.0, le=1.0), NUMBER] | None = None
    repeat_penalty: Annotated[float, Field(gt=0.0, le=10.0), NUMBER] | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0), NUMBER] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0), NUMBER] | None = None
    # -1 is "random" as in llama.cpp; any other value wraps to the runtimes' 32 bits.
    seed: Annotated[int, Field(ge=-(2**63), le=2**64 - 1), NUMBER] | None = None
    stop: StopField = None
    # Generate to max_tokens past end-of-sequence (as in vLLM/llama.cpp; benchmarks).
    ignore_eos: StrictBool | None = None
    # OpenAI: token id (as a string key) -> bias in [-100, 100] added to its logit.
    logit_bias: (
        Annotated[
            dict[
                Annotated[str, Field(pattern=r"^\d{1,9}$")],
                Annotated[float, Field(ge=-100, le=100), NUMBER],
            ],
            Field(max_length=1024),
        ]
        | None
    ) = None


_DEFAULT = Sampling()


def _given(value: T | None, default: T) -> T:
    return default if value is None else value


def to_sampling(
    fields: SamplingFields, max_tokens: int | None, default_max: int, *, grammar: str | None = None
) -> Sampling:
    """The domain's sampling settings from validated wire fields.

    ``max_tokens`` is passed apart because dialects name it differently
    (``max_completion_tokens``, ``num_predict``, ``maxTokens``); ``grammar`` is the
    GBNF a structured-output request compiled to (``rkllmd.structured``).
    """
    stop = fields.stop
    seed = fields.seed
    # Set by the request, and not to null (null means "not set").
    given = {
        name
        for name in set(fields.model_fields_set) & set(SamplingFields.model_fields)
        if getattr(fields, name) is not None
    }
    if max_tokens:
        given.add("max_tokens")
    return Sampling(
        max_tokens=max_tokens or default_max,
        temperature=_given(fields.temperature, _DEFAULT.temperature),
        top_p=_given(fields.top_p, _DEFAULT.top_p),
        top_k=_given(fields.top_k, _DEFAULT.top_k),
        min_p=_given(fields.min_p, _DEFAULT.min_p),
        repeat_penalty=_given(fields.repeat_penalty, _DEFAULT.repeat_penalty),
        presence_penalty=_given(fields.presence_penalty, _DEFAULT.presence_penalty),
        frequency_penalty=_given(fields.frequency_penalty, _DEFAULT.frequency_penalty),
        seed=None if seed is None or seed == -1 else seed % 2**32,
        stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
        ignore_eos=bool(fields.ignore_eos),
        given=tuple(sorted(given)),
        logit_bias=tuple((int(t), b) for t, b in (fields.logit_bias or {}).items()),
        grammar=grammar,
    )
