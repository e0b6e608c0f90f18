"""Which KV slots a new request gets, and how much of its prompt they already hold.

Each slot keeps its tokens' KV after a request ends. A new request goes to the free
slot holding the longest prefix of its prompt (a follow-up turn finds its own
conversation); on ties to the one used least recently, so that a short unrelated
request does not evict the history a client is about to continue. When another
slot (free or busy) holds much more of the prompt, its KV is copied over instead
of recomputed: a copy moves one buffer, recomputing costs a prefill.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from .native import Context
from .sequence import Slot

# Copy another slot's KV instead of recomputing when that saves at least this many
# prompt tokens (a stream copy moves the sequence's whole KV buffer).
COPY_MIN_TOKENS = 32


class SlotTable:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self.slots = [Slot(i) for i in range(ctx.n_seq)]
        self._clock = itertools.count(1)
        self._used = [0] * ctx.n_seq  # when each slot last got a request
        self.copies = 0

    def free(self) -> int:
        return sum(1 for slot in self.slots if slot.stream is None)

    def choose(self, prompt: Sequence[int], n: int) -> list[Slot]:
        """Slots for a request's ``n`` choices: the first holds the longest prefix of the
        prompt, the others are the least recently used free ones."""
        free = sorted(
            (slot for slot in self.slots if slot.stream is None),
            key=lambda slot: (-slot.common_prefix(prompt), self._used[slot.seq_id], slot.seq_id),
        )
        first, rest = free[0], sorted(free[1:], key=lambda s: (self._used[s.seq_id], s.seq_id))
        chosen = [first, *rest[: n - 1]]
        for slot in chosen:
            self._used[slot.seq_id] = next(self._clock)
        return chosen

    def reuse_prefix(self, slot: Slot, prompt: list[int]) -> int:
        """Keep the longest usable prefix in ``slot`` (copying it from another slot when
        one holds much more of it); return how many prompt tokens need no evaluation."""
        # At least the last prompt token is evaluated again: its logits start sampling.
        limit = len(prompt) - 1
        own = min(slot.common_prefix(prompt), limit)
        donor = max(self.slots, key=lambda s: s.common_prefix(prompt))
        shared = min(donor.common_prefix(prompt), limit)
        if donor is not slot and shared >= own + COPY_MIN_TOKENS:
            self._ctx.seq_cp(donor.seq_id, slot.seq_id)
            slot.tokens = donor.tokens[:]
            self.copies += 1
            own = shared
        if not self._ctx.seq_rm(slot.seq_id, own):
            # This model cannot drop part of a sequence (recurrent state): start over.
            self._ctx.seq_rm(slot.seq_id, 0)
            own = 0
        del slot.tokens[own:]
        return own

    def forget_all(self) -> None:
        self._ctx.clear()
        for slot in self.slots:
            slot.tokens = []
