"""Speculative decoding: guesses of the next tokens that the main model verifies
in one batch.

Two drafters:

* ``NgramDrafter`` (prompt lookup): if the last few tokens appeared earlier in the
  sequence, guess that what followed them then follows them now. Free, and good
  at the repetitive outputs of code edits, extraction and quoting.
* ``ModelDrafter``: a second, smaller GGUF with the same vocabulary, loaded in the
  same worker, with one sequence per main sequence, run greedily for k steps.

The engine accepts a guessed token only when it equals what the main model's own
sampler picks at that position, so the output follows the main model's
distribution (greedy output is identical to decoding without a draft).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ...errors import DraftIncompatible, LoadFailed
from ...requests import BackendDefaults, LoadOptions
from ..base import pick_option
from .native import DECODE_OK, Batch, Context
from .setup import DEFAULT_DRAFT_TOKENS, open_model


class Drafter(Protocol):
    def propose(self, wants: list[tuple[int, list[int], int]]) -> dict[int, list[int]]:
        """Draft tokens per sequence: ``wants`` holds (sequence id, the sequence's tokens
        up to and including the last sampled one, at most how many to draft)."""
        ...

    def close(self) -> None: ...


class NgramDrafter:
    """Prompt-lookup drafting over each sequence's own tokens."""

    def __init__(self, ngram: int = 3, min_ngram: int = 1) -> None:
        self._sizes = range(ngram, min_ngram - 1, -1)

    def propose(self, wants: list[tuple[int, list[int], int]]) -> dict[int, list[int]]:
        drafts: dict[int, list[int]] = {}
        for seq, history, most in wants:
            guess = self._lookup(history, most)
            if guess:
                drafts[seq] = guess
        return drafts

    def _lookup(self, history: list[int], most: int) -> list[int]:
        end = len(history)
        for size in self._sizes:
            if end <= size:
                continue
            tail = list(history[end - size :])
            # The latest earlier occurrence wins: recent text predicts best.
            for start in range(end - size - 1, -1, -1):
                if history[start] == tail[0] and list(history[start : start + size]) == tail:
                    follow = list(history[start + size : start + size + most])
                    if follow:
                        return follow
        return []

    def close(self) -> None:
        return None


class ModelDrafter:
    """A small model drafting greedily, one sequence per main sequence."""

    def __init__(self, lib: Any, model: Any, ctx: Context) -> None:
        self._lib = lib
        self._vocab = model.vocab
        self._model = model  # kept open while the context uses its weights
        self._ctx = ctx
        self._batch = Batch(lib, ctx.n_batch)
        self._held: list[list[int]] = [[] for _ in range(ctx.n_seq)]
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        self._greedy = chain
        self.n_vocab = int(model.n_vocab())

    def propose(self, wants: list[tuple[int, list[int], int]]) -> dict[int, list[int]]:
        lanes = {seq: (list(history), most) for seq, history, most in wants if most > 0}
        drafts: dict[int, list[int]] = {}
        for seq, (history, _) in list(lanes.items()):
            if not self._catch_up(seq, history[:-1]):
                del lanes[seq]
        feed = {seq: history[-1] for seq, (history, _) in lanes.items()}
        while feed:
            rows = self._step(feed)
            if rows is None:
                break
            feed = {}
            for seq, row in rows.items():
                token = int(self._lib.llama_sampler_sample(self._greedy, self._ctx.ptr, row))
                drafts.setdefault(seq, []).append(token)
                # Nothing follows the end of an answer: stop drafting this lane there.
                if len(drafts[seq]) < lanes[seq][1] and not self._is_eog(token):
                    feed[seq] = token
        return drafts

    def _is_eog(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))

    def _catch_up(self, seq: int, history: list[int]) -> bool:
        """Make the draft sequence hold exactly ``history`` (all tokens before the last
        sampled one), evaluating what it lacks in batch-sized chunks."""
        held = self._held[seq]
        same = 0
        for old, new in zip(held, history, strict=False):
            if old != new:
                break
            same += 1
        if same < len(held):
            if not self._ctx.seq_rm(seq, same):
                self._ctx.seq_rm(seq, 0)
                same = 0
            del held[same:]
        batch = self._batch
        for start in range(same, len(history), batch.capacity):
            chunk = history[start : start + batch.capacity]
            batch.clear()
            batch.add(chunk, start, seq, 0)
            if self._ctx.decode(batch) != DECODE_OK:
                self._ctx.seq_rm(seq, len(held))
                return False
            held.extend(chunk)
        return True

    def _step(self, feed: dict[int, int]) -> dict[int, int] | None:
        """Decode one token per lane; the batch row of each lane, None on failure."""
        batch = self._batch
        batch.clear()
        rows = {
            seq: batch.add([token], len(self._held[seq]), seq, 1)
            for seq, token in sorted(feed.items())
        }
        if self._ctx.decode(batch) != DECODE_OK:
            for seq in feed:
                self._ctx.seq_rm(seq, len(self._held[seq]))
            return None
        for seq, token in feed.items():
            self._held[seq].append(token)
        return rows

    def close(self) -> None:
        if self._greedy:
            self._lib.llama_sampler_free(self._greedy)
            self._greedy = None
        self._ctx.close()
        self._model.close()


def open_draft_model(
    lib: Any, main: Any, path: Path, seq_ctx: int, n_seq: int, batch: int, threads: int
) -> ModelDrafter:
    """Load a draft model beside ``main``; it must share the main model's vocabulary."""
    model = open_model(lib, path)
    if not same_vocabulary(lib, main, model):
        model.close()
        raise DraftIncompatible("the draft model's vocabulary differs from the model's")
    try:
        ctx = Context(
            lib, model.model, n_ctx=seq_ctx * n_seq, n_seq=n_seq, n_batch=batch, threads=threads
        )
    except LoadFailed:
        model.close()
        raise
    return ModelDrafter(lib, model, ctx)


def same_vocabulary(lib: Any, main: Any, draft: Any) -> bool:
    """Same size, same special tokens, and the same text for a sample of ids."""
    if int(main.n_vocab()) != int(draft.n_vocab()):
        return False
    if (main.token_bos(), main.token_eos()) != (draft.token_bos(), draft.token_eos()):
        return False
    n_vocab = int(main.n_vocab())
    sample = range(0, n_vocab, max(1, n_vocab // 256))
    return all(main.token_get_text(t) == draft.token_get_text(t) for t in sample)


@dataclass(frozen=True, slots=True)
class Speculation:
    """Which drafter a load asked for (the load's options over the configured ones)."""

    kind: str | None = None  # "draft_model", "lookup" or None
    draft_model: str | None = None
    lookup_ngram: int = 0
    tokens: int = DEFAULT_DRAFT_TOKENS

    @classmethod
    def choose(cls, options: LoadOptions, defaults: BackendDefaults) -> Speculation:
        tokens = pick_option(
            options.draft_tokens, defaults.draft_tokens, DEFAULT_DRAFT_TOKENS, None
        )
        model = options.draft_model or defaults.draft_model
        if model:
            return cls("draft_model", draft_model=model, tokens=tokens)
        ngram = options.lookup_ngram or defaults.lookup_ngram
        if ngram:
            return cls("lookup", lookup_ngram=ngram, tokens=tokens)
        return cls()

    def open(
        self, lib: Any, main: Any, seq_ctx: int, n_seq: int, batch: int, threads: int
    ) -> Drafter | None:
        if self.draft_model:
            path = Path(self.draft_model)
            return open_draft_model(lib, main, path, seq_ctx, n_seq, batch, threads)
        if self.lookup_ngram:
            return NgramDrafter(self.lookup_ngram)
        return None
