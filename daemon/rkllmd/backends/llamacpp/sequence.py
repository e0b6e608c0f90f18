"""The engine's bookkeeping: KV slots, requests (jobs) and their choices (streams).

A *slot* is one sequence id of the context and the tokens its KV cells hold, kept
after a request ends so that the next prompt sharing the prefix skips it. A *job*
is one generation request; it has ``n`` *streams* (choices), each on its own slot
with its own sampler. The prompt is evaluated once, on the first stream's slot;
the others copy that sequence when the prompt's logits are ready.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ...requests import TokenLogprob, Usage
from ..base import Emit
from ..textstream import TextStream
from .native import Context
from .sampling import Sampler, SamplerSpec

# A position whose KV was not produced from a token id (an image embedding): it
# never matches a prompt token, so prefix reuse stops there. Without this, the
# ids that happened to sit at those positions before would let a later text
# prompt "reuse" image cells as if they were its own tokens.
OPAQUE = -1


class MediaChunk(Protocol):
    """Prompt cells that are not token ids (an image's embeddings), evaluated by their
    own decode outside the step's batch: libmtmd's ``mtmd_helper_eval_chunk_single``
    takes the context, the sequence id and the position, as ``evaluate`` does. The
    prompt holds ``n_tokens`` OPAQUE ids where the chunk goes."""

    @property
    def n_tokens(self) -> int: ...

    def evaluate(self, ctx: Context, seq_id: int, position: int) -> bool:
        """Fill the cells from ``position`` on; False if the decode failed or stopped."""
        ...


class Slot:
    __slots__ = ("seq_id", "stream", "tokens")

    def __init__(self, seq_id: int) -> None:
        self.seq_id = seq_id
        self.tokens: list[int] = []  # tokens[i] is the token whose KV sits at position i
        self.stream: Stream | None = None

    def common_prefix(self, prompt: Sequence[int]) -> int:
        same = 0
        for old, new in zip(self.tokens, prompt, strict=False):
            if old != new or old == OPAQUE:
                break
            same += 1
        return same


@dataclass(slots=True)
class Job:
    """One generation request as the engine runs it."""

    prompt: list[int]
    specs: list[SamplerSpec]  # one per choice
    budget: int  # new tokens per choice
    emit: Emit
    cancel: threading.Event
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    logprobs: int | None = None  # None: off; k: the sampled token and k alternatives
    media: dict[int, MediaChunk] = field(default_factory=dict)  # by prompt position
    draft: bool = True  # may use speculative decoding when the engine has a drafter
    usage: Usage = field(default_factory=Usage)
    finish: list[str] = field(default_factory=list)
    draft_proposed: int = 0
    draft_accepted: int = 0
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    streams: list[Stream] = field(default_factory=list)  # set when the job starts

    @property
    def n(self) -> int:
        return len(self.specs)


class Phase(enum.Enum):
    PREFILL = "prefill"  # evaluating the prompt (first stream only)
    FORK = "fork"  # waiting for the first stream's prompt logits to copy them
    DECODE = "decode"
    DONE = "done"


class Stream:
    """One choice of a job, bound to a slot while it runs."""

    def __init__(self, job: Job, index: int, slot: Slot, sampler: Sampler) -> None:
        self.job = job
        self.index = index
        self.slot = slot
        self.sampler = sampler
        self.text = TextStream(job.stop)
        self.phase = Phase.FORK
        self.pending: list[int] = []  # tokens to feed at the slot's next positions
        self.generated = 0
        self.finish_reason = ""
        self.entries: list[TokenLogprob] = []  # log-probabilities not yet emitted
        slot.stream = self

    @property
    def position(self) -> int:
        return len(self.slot.tokens)

    def emit(self, text: str) -> None:
        entries = self.entries or None
        if not (text or entries):
            return
        self.entries = []
        if self.index or entries is not None:
            self.job.emit(text, self.index, entries)
        else:
            self.job.emit(text)  # what every backend's emit takes
