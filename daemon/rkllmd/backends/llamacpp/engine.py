"""Continuous batching over one llama.cpp context: the engine thread and its step.

Each step builds one batch: one token for every decoding stream (more with a
draft to verify), then prompt chunks of the streams still prefilling, up to the
context's batch size. One ``llama_decode`` runs it; each stream with an output
row then samples its next token. Requests join between steps, so a newcomer
stalls the others for at most one chunk of its prompt.

Batch entries are ordered by sequence id: with one KV stream per sequence,
llama.cpp splits a batch into equal per-sequence parts and can only put
consecutive sequence ids into one part.

Threads: job threads call ``run`` and wait; the engine thread owns the context,
the slots and every stream, so none of those need locks. Only the queue of
waiting jobs is shared (under ``_cond``).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ...errors import GenerationFailed
from .draft import Drafter
from .native import DECODE_ABORTED, DECODE_OK, Batch, Context, Pieces
from .sampling import Sampler, Vocabulary, token_logprob
from .sequence import OPAQUE, Job, Phase, Stream
from .slots import SlotTable

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class EngineStats:
    steps: int = 0
    decoded_tokens: int = 0  # tokens evaluated, prompt chunks included
    aborted_decodes: int = 0  # decodes stopped inside llama.cpp by the abort hook
    kv_copies: int = 0  # n > 1: the prompt's sequence copied to the other choices
    draft_proposed: int = 0
    draft_accepted: int = 0
    grammar_resamples: int = 0  # tokens a grammar rejected, sampled again under it


@dataclass(slots=True)
class Feed:
    """What one stream puts into this step's batch."""

    stream: Stream
    tokens: list[int]
    outputs: int  # the last ``outputs`` tokens produce logits
    index: int = 0  # batch index of the first token


class Engine:
    def __init__(
        self,
        ctx: Context,
        vocabulary: Vocabulary,
        pieces: Pieces,
        is_eog: Callable[[int], bool],
        drafter: Drafter | None = None,
        draft_max: int = 8,
    ) -> None:
        self._ctx = ctx
        self._drafter = drafter
        self._draft_max = draft_max
        self._vocabulary = vocabulary
        self._pieces = pieces
        self._is_eog = is_eog
        self._table = SlotTable(ctx)
        self._streams: list[Stream] = []  # running, in order of admission
        self._waiting: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._batch = Batch(vocabulary.lib, ctx.n_batch)
        self.stats = EngineStats()
        self._thread = threading.Thread(target=self._run, name="llama-engine", daemon=True)
        self._thread.start()

    @property
    def n_slots(self) -> int:
        return len(self._table.slots)

    @property
    def n_ctx_seq(self) -> int:
        return self._ctx.n_ctx_seq

    # --- job threads -----------------------------------------------------------------

    def run(self, job: Job) -> None:
        """Run a job to its end (or abort); raises what failed it."""
        if job.n > self.n_slots:
            raise GenerationFailed(f"{job.n} choices need more than the {self.n_slots} slots")
        with self._cond:
            if self._closing:
                raise GenerationFailed("the engine is shutting down")
            self._waiting.append(job)
            self._cond.notify()
        job.done.wait()
        if job.error is not None:
            raise job.error

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        if self._drafter is not None:
            self._drafter.close()

    # --- the engine thread -----------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._closing or self._waiting or self._streams):
                    self._cond.wait()
                if self._closing:
                    break
                admitted = self._admit_locked()
            try:
                for job in admitted:
                    self._start(job)
                self._step()
            except Exception as exc:
                logger.exception("the engine step failed")
                self._fail_everything(exc)
        self._abort_everything()

    def _admit_locked(self) -> list[Job]:
        """Take waiting jobs, first come first served, while their choices fit."""
        admitted: list[Job] = []
        free = self._table.free()
        while self._waiting and self._waiting[0].n <= free:
            job = self._waiting.popleft()
            free -= job.n
            admitted.append(job)
        # A cancelled job further back need not wait for slots to end.
        for job in [j for j in self._waiting if j.cancel.is_set()]:
            self._waiting.remove(job)
            job.finish = ["abort"] * job.n
            job.done.set()
        return admitted

    def _start(self, job: Job) -> None:
        job.usage.prompt_tokens = len(job.prompt)
        if not job.prompt or job.prompt[-1] == OPAQUE:
            # Sampling starts from the logits of the prompt's last token.
            job.error = GenerationFailed("a prompt must end with text")
            job.done.set()
            return
        slots = self._table.choose(job.prompt, job.n)
        try:
            samplers = [Sampler(self._vocabulary, spec) for spec in job.specs]
        except Exception as exc:
            job.error = exc
            job.done.set()
            return
        job.streams = [
            Stream(job, i, slot, s) for i, (slot, s) in enumerate(zip(slots, samplers, strict=True))
        ]
        first = job.streams[0]
        reuse = self._table.reuse_prefix(first.slot, job.prompt)
        job.usage.cached_tokens = reuse
        first.pending = job.prompt[reuse:]
        first.phase = Phase.PREFILL
        self._streams.extend(job.streams)

    # --- one step --------------------------------------------------------------------

    def _step(self) -> None:
        self._reap_cancelled()
        self._evaluate_media()
        feeds = self._plan()
        if not feeds:
            return
        batch = self._batch
        batch.clear()
        for feed in sorted(feeds, key=lambda f: f.stream.slot.seq_id):
            feed.index = batch.add(
                feed.tokens, feed.stream.position, feed.stream.slot.seq_id, feed.outputs
            )
        self._arm_abort(feeds)
        self.stats.steps += 1
        status = self._ctx.decode(batch)
        if status != DECODE_OK:
            self._undo(feeds, status)
            return
        self.stats.decoded_tokens += batch.n
        for feed in feeds:
            self._commit(feed)

    def _plan(self) -> list[Feed]:
        room = self._batch.capacity
        drafts = self._draft()
        feeds: list[Feed] = []
        for stream in self._streams:
            if stream.phase is Phase.DECODE:
                tokens = stream.pending + drafts.get(stream.slot.seq_id, [])
                feeds.append(Feed(stream, tokens, len(tokens)))
                room -= len(tokens)
        for stream in self._streams:
            if stream.phase is Phase.PREFILL and room > 0:
                chunk = stream.pending[:room]
                if OPAQUE in chunk:  # text up to the next media chunk
                    chunk = chunk[: chunk.index(OPAQUE)]
                if not chunk:
                    continue
                outputs = 1 if len(chunk) == len(stream.pending) else 0
                feeds.append(Feed(stream, chunk, outputs))
                room -= len(chunk)
        return feeds

    def _evaluate_media(self) -> None:
        """Media chunks next in a prompt run their own decodes before the step (they
        stall the others for that long, like a prompt chunk)."""
        for stream in [s for s in self._streams if s.phase is Phase.PREFILL]:
            if not stream.pending or stream.pending[0] != OPAQUE:
                continue
            job, slot = stream.job, stream.slot
            chunk = job.media[stream.position]
            self._ctx.abort.arm(self._stop_check([job]))
            if chunk.evaluate(self._ctx, slot.seq_id, stream.position):
                slot.tokens.extend([OPAQUE] * chunk.n_tokens)
                stream.pending = stream.pending[chunk.n_tokens :]
                continue
            self._ctx.seq_rm(slot.seq_id, stream.position)
            if not job.cancel.is_set():
                self._fail(job, GenerationFailed("the media in the prompt could not be evaluated"))

    def _draft(self) -> dict[int, list[int]]:
        """Guesses for the decoding streams to verify in this step, per sequence id."""
        decoding = [s for s in self._streams if s.phase is Phase.DECODE]
        if self._drafter is None or not decoding:
            return {}
        # Every decoding stream keeps its one token in the batch, drafts or not.
        share = (self._batch.capacity - len(decoding)) // len(decoding)
        wants = []
        for stream in decoding:
            most = min(
                self._draft_max,
                share,
                stream.job.budget - stream.generated - 1,
                self.n_ctx_seq - stream.position - 2,
            )
            if stream.job.draft and most > 0:
                wants.append((stream.slot.seq_id, stream.slot.tokens + stream.pending, most))
        return self._drafter.propose(wants) if wants else {}

    def _arm_abort(self, feeds: list[Feed]) -> None:
        """Let a cancelled prefill (or shutdown) stop the decode midway; pure decode
        steps are short and skip the per-node callback."""
        jobs = [f.stream.job for f in feeds if f.stream.phase is Phase.PREFILL]
        if jobs:
            self._ctx.abort.arm(self._stop_check(jobs))
        else:
            self._ctx.abort.disarm()

    def _stop_check(self, jobs: list[Job]) -> Callable[[], bool]:
        cancels = [job.cancel for job in jobs]
        return lambda: self._closing or any(c.is_set() for c in cancels)

    def _undo(self, feeds: list[Feed], status: int) -> None:
        """The decode did not complete: drop whatever part of the batch reached the KV
        cache, so every slot again holds exactly its committed tokens."""
        for feed in feeds:
            self._ctx.seq_rm(feed.stream.slot.seq_id, feed.stream.position)
        if status == DECODE_ABORTED:
            self.stats.aborted_decodes += 1
            return  # the cancelled jobs end in the next step; the others run again
        error = GenerationFailed(f"llama.cpp could not evaluate the batch (status {status})")
        for job in {id(f.stream.job): f.stream.job for f in feeds}.values():
            self._fail(job, error)

    def _commit(self, feed: Feed) -> None:
        stream = feed.stream
        if stream.phase is Phase.DECODE and len(feed.tokens) > 1:
            self._verify(feed)
            return
        count = len(feed.tokens)
        stream.slot.tokens.extend(feed.tokens)
        stream.pending = stream.pending[count:]
        if not feed.outputs:
            return
        row = feed.index + count - 1
        if stream.phase is Phase.PREFILL:
            self._fork(stream, row)
        self._sample(stream, row)

    def _verify(self, feed: Feed) -> None:
        """Sample at each drafted position in turn; keep the drafts up to the first one
        the stream's own sampler disagrees with, whose pick becomes the next input."""
        stream, job = feed.stream, feed.stream.job
        draft = feed.tokens[1:]
        stream.slot.tokens.append(feed.tokens[0])
        for offset in range(len(draft) + 1):
            token = self._sample(stream, feed.index + offset)
            if offset == len(draft):
                break
            # Drafts after the end of the answer were never in question: not counted.
            hit = token == draft[offset]
            self._count_draft(job, hit)
            if not hit or stream.phase is Phase.DONE:
                break
            stream.slot.tokens.append(token)
        # The cells of rejected (or unneeded) drafts go.
        self._ctx.seq_rm(stream.slot.seq_id, stream.position)

    def _count_draft(self, job: Job, accepted: bool) -> None:
        job.draft_proposed += 1
        self.stats.draft_proposed += 1
        if accepted:
            job.draft_accepted += 1
            self.stats.draft_accepted += 1

    def _fork(self, first: Stream, row: int) -> None:
        """The prompt is in: the job's other choices copy it and sample from its row."""
        for sibling in first.job.streams[1:]:
            if sibling.phase is Phase.FORK:
                self._ctx.seq_cp(first.slot.seq_id, sibling.slot.seq_id)
                sibling.slot.tokens = first.slot.tokens[:]
                self.stats.kv_copies += 1
                self._sample(sibling, row)

    def _sample(self, stream: Stream, row: int) -> int:
        """Sample the stream's next token from a batch row and pass it on; the stream
        ends on end-of-generation, a stop string or its budget."""
        token = stream.sampler.sample(self._ctx, row)
        job = stream.job
        if not job.ignore_eos and self._is_eog(token):
            self._finish(stream, "stop")
            return token
        stream.generated += 1
        job.usage.completion_tokens += 1
        if job.logprobs is not None:
            logits = self._ctx.logits_row(row, self._vocabulary.n_vocab)
            stream.entries.append(token_logprob(logits, token, job.logprobs, self._pieces))
        stream.emit(stream.text.feed(self._pieces(token)))
        if stream.text.stopped:
            stream.entries = []  # the stop string's tokens are not part of the answer
            self._finish(stream, "stop")
        elif stream.generated >= job.budget:
            self._finish(stream, "length")
        else:
            stream.pending = [token]
            stream.phase = Phase.DECODE
        return token

    # --- ends ------------------------------------------------------------------------

    def _finish(self, stream: Stream, reason: str) -> None:
        if reason != "abort" and not stream.text.stopped:
            stream.emit(stream.text.finish())
        stream.finish_reason = reason
        stream.phase = Phase.DONE
        self.stats.grammar_resamples += stream.sampler.rejections
        stream.sampler.close()
        stream.slot.stream = None
        self._streams.remove(stream)
        job = stream.job
        if all(s.phase is Phase.DONE for s in job.streams):
            job.finish = [s.finish_reason for s in job.streams]
            job.done.set()

    def _reap_cancelled(self) -> None:
        for stream in [s for s in self._streams if s.job.cancel.is_set()]:
            if stream in self._streams:
                self._finish(stream, "abort")

    def _fail(self, job: Job, error: BaseException) -> None:
        job.error = error
        for stream in [s for s in self._streams if s.job is job]:
            self._finish(stream, "abort")
        job.done.set()

    def _fail_everything(self, error: BaseException) -> None:
        failure = GenerationFailed("the engine failed")
        failure.__cause__ = error
        for job in {id(s.job): s.job for s in self._streams}.values():
            self._fail(job, failure)
        self._table.forget_all()

    def _abort_everything(self) -> None:
        for stream in list(self._streams):
            self._finish(stream, "abort")
        with self._cond:
            waiting, self._waiting = list(self._waiting), deque()
        for job in waiting:
            job.finish = ["abort"] * job.n
            job.done.set()
