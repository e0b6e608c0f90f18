"""Per-sequence sampling: a llama.cpp sampler chain, a grammar checked after the fact,
and log-probabilities read from the step's logits.

Each sequence owns its chain because chains carry state (penalty history, the RNG,
the grammar's parse stacks). The chain runs in C; Python only picks the path:

* no grammar: one ``llama_sampler_sample`` call per token (logits to token in C);
* with a grammar: sample from the unconstrained distribution, ask the grammar
  whether that one token is allowed, and only when it is not, mask the whole
  vocabulary with the grammar and sample again. Masking 49k candidates every step
  is what makes llama-cpp-python's grammars cost ~10 ms per token; a check of one
  candidate costs microseconds, and most tokens of a well-prompted model pass it.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ...errors import InvalidParams
from ...requests import TokenLogprob
from .native import TOKEN_DATA, Context

# Penalties look at the last 64 generated tokens, as llama-cpp-python's Llama does.
PENALTY_WINDOW = 64


@dataclass(frozen=True, slots=True)
class SamplerSpec:
    """What one sequence samples with (the engine's view of a request's sampling)."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int = 0
    logit_bias: tuple[tuple[int, float], ...] = ()
    grammar: str | None = None  # GBNF, root rule "root"

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


class Vocabulary:
    """What every sampler of one model shares: the vocabulary and scratch candidates."""

    def __init__(self, lib: Any, vocab: Any, n_vocab: int) -> None:
        self.lib = lib
        self.vocab = vocab
        self.n_vocab = n_vocab
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._scratch = np.zeros(n_vocab, TOKEN_DATA)
        self._array = lib.llama_token_data_array()
        self._one = lib.llama_token_data()
        self._one_array = lib.llama_token_data_array()
        self._one_array.data = ctypes.pointer(self._one)

    def candidates(self, logits: npt.NDArray[np.float32]) -> Any:
        """All tokens with the given logits, as a llama_token_data_array (shared scratch:
        valid until the next call)."""
        scratch = self._scratch
        scratch["id"] = self._ids  # samplers reorder the records in place
        scratch["logit"] = logits
        scratch["p"] = 0.0
        array = self._array
        array.data = scratch.ctypes.data_as(ctypes.POINTER(self.lib.llama_token_data))
        array.size = self.n_vocab
        array.selected = -1
        array.sorted = False
        return array

    def one(self, token: int) -> Any:
        """A one-candidate array holding ``token`` (shared scratch)."""
        self._one.id = token
        self._one.logit = 1.0
        self._one.p = 0.0
        array = self._one_array
        array.size = 1
        array.selected = -1
        array.sorted = False
        return array


class Sampler:
    """One sequence's sampler chain and optional grammar. Free with ``close``."""

    def __init__(self, vocabulary: Vocabulary, spec: SamplerSpec) -> None:
        self._v = vocabulary
        self._lib = vocabulary.lib
        self.spec = spec
        self._grammar: Any = None
        self._chain = self._build_chain(spec)
        if spec.grammar:
            self._grammar = self._build_grammar(spec.grammar)
        self.rejections = 0  # tokens the grammar turned down (then resampled)

    def _build_chain(self, spec: SamplerSpec) -> Any:
        lib, n_vocab = self._lib, self._v.n_vocab
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        add = lib.llama_sampler_chain_add
        if spec.logit_bias:
            biases = (lib.llama_logit_bias * len(spec.logit_bias))(*spec.logit_bias)
            add(chain, lib.llama_sampler_init_logit_bias(n_vocab, len(spec.logit_bias), biases))
        if (spec.repeat_penalty, spec.frequency_penalty, spec.presence_penalty) != (1, 0, 0):
            add(
                chain,
                lib.llama_sampler_init_penalties(
                    n_vocab,
                    PENALTY_WINDOW,
                    spec.repeat_penalty,
                    spec.frequency_penalty,
                    spec.presence_penalty,
                ),
            )
        if spec.greedy:
            add(chain, lib.llama_sampler_init_greedy())
            return chain
        # The order of llama-cpp-python's Llama, so that a seed gives the same text.
        add(chain, lib.llama_sampler_init_top_k(spec.top_k))
        add(chain, lib.llama_sampler_init_top_p(spec.top_p, 1))
        add(chain, lib.llama_sampler_init_min_p(spec.min_p, 1))
        add(chain, lib.llama_sampler_init_temp(spec.temperature))
        add(chain, lib.llama_sampler_init_dist(spec.seed))
        return chain

    def _build_grammar(self, grammar: str) -> Any:
        sampler = self._lib.llama_sampler_init_grammar(self._v.vocab, grammar.encode(), b"root")
        if not sampler:
            self.close()
            raise InvalidParams("the grammar does not parse (GBNF expected)")
        return sampler

    def sample(self, ctx: Context, index: int) -> int:
        """Sample the next token from batch entry ``index`` and record it."""
        if self._grammar is None:
            return int(self._lib.llama_sampler_sample(self._chain, ctx.ptr, index))
        return self._sample_constrained(ctx.logits_row(index, self._v.n_vocab))

    def _sample_constrained(self, logits: npt.NDArray[np.float32]) -> int:
        lib = self._lib
        candidates = self._v.candidates(logits)
        lib.llama_sampler_apply(self._chain, ctypes.byref(candidates))
        token = int(candidates.data[candidates.selected].id)
        if not self._allowed(token):
            self.rejections += 1
            candidates = self._v.candidates(logits)
            lib.llama_sampler_apply(self._grammar, ctypes.byref(candidates))
            lib.llama_sampler_apply(self._chain, ctypes.byref(candidates))
            token = int(candidates.data[candidates.selected].id)
        lib.llama_sampler_accept(self._grammar, token)
        lib.llama_sampler_accept(self._chain, token)
        return token

    def _allowed(self, token: int) -> bool:
        one = self._v.one(token)
        self._lib.llama_sampler_apply(self._grammar, ctypes.byref(one))
        return math.isfinite(one.data[0].logit)

    def accept(self, token: int) -> None:
        """Record a token chosen elsewhere (a verified draft token)."""
        if self._grammar is not None:
            self._lib.llama_sampler_accept(self._grammar, token)
        self._lib.llama_sampler_accept(self._chain, token)

    def close(self) -> None:
        for sampler in (self._chain, self._grammar):
            if sampler:
                self._lib.llama_sampler_free(sampler)
        self._chain = self._grammar = None


def top_logprobs(
    logits: npt.NDArray[np.float32], token: int, top: int
) -> tuple[float, list[tuple[int, float]]]:
    """The model's log-probability of ``token`` and its ``top`` most likely tokens,
    from the raw logits of the step (before temperature, penalties or truncation)."""
    peak = float(logits.max())
    log_total = peak + math.log(float(np.exp(logits - peak, dtype=np.float64).sum()))
    chosen = float(logits[token]) - log_total
    if top <= 0:
        return chosen, []
    best = np.argpartition(logits, -top)[-top:]
    best = best[np.argsort(-logits[best], kind="stable")]
    return chosen, [(int(t), float(logits[t]) - log_total) for t in best]


def token_logprob(
    logits: npt.NDArray[np.float32], token: int, top: int, pieces: Callable[[int], bytes]
) -> TokenLogprob:
    """``token``'s log-probability entry with its ``top`` alternatives, as text."""
    chosen, best = top_logprobs(logits, token, top)
    alternatives = tuple(_entry(t, lp, pieces) for t, lp in best)
    return _entry(token, chosen, pieces, alternatives)


def _entry(
    token: int,
    logprob: float,
    pieces: Callable[[int], bytes],
    top: tuple[TokenLogprob, ...] = (),
) -> TokenLogprob:
    piece = pieces(token)
    return TokenLogprob(piece.decode(errors="replace"), logprob, tuple(piece), top)
