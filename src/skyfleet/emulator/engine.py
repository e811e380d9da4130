"""Pure continuous-batching scheduler: no I/O, no clock; the server drives it.

One call to `Engine.step()` plans and "runs" one engine iteration:

1. Admission (FIFO from the waiting queue) while the running set is below `max_num_seqs`,
   the prefill token budget is not spent, and the KV cache has free blocks for the whole
   prompt plus a 1 % watermark (vLLM's rule). Blocks are `block_size` tokens each.
2. The iteration first prefills admitted prompts, oldest first, one after another, chunked
   so that decode tokens + prefill tokens ≤ `max_num_batched_tokens`; then it runs one
   decode step for every sequence that was already decoding (vLLM's prefill-first order).
3. Its duration is `Profile.iteration_time`, extended to chunks:

       T = Σ_chunks (prefill_time(p + c) − prefill_time(p)) + decode_step_time(B, C) [B > 0]

   where B = decoding sequences, C = the tokens they hold (prompt + generated), and a chunk
   of c tokens starts at prompt offset p. The chunk terms telescope, so a prompt costs
   exactly `prefill_time(prompt)` however it is chunked (one `prefill_base_s` per prompt),
   and with whole prompts T = `iteration_time(B, C, prompts)`.
4. Tokens: a prompt whose prefill completes emits its first token when its own prefill
   ends; each decoding sequence emits one token at the end of the decode step. A request
   arriving during an iteration waits for it to end before it can be admitted.

KV blocks grow as tokens are generated. When a decoding sequence needs a block and none is
free, the most recently admitted running sequence is preempted (vLLM's recompute mode): its
blocks are freed and it goes back to the head of the waiting queue, to be re-prefilled over
prompt + generated tokens later.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from dataclasses import dataclass, field

from skyfleet.perf import Profile


@dataclass(eq=False)
class Sequence:
    """One request inside the engine. `generated` counts tokens emitted so far."""

    seq_id: int
    prompt_tokens: int
    max_output_tokens: int
    generated: int = 0
    prefilled: int = 0  # tokens of the (re)prefill target already computed
    prefill_target: int = 0  # prompt (+ generated, after a preemption) to prefill
    blocks: int = 0
    admitted_order: int = 0
    preemptions: int = 0
    aborted: bool = False
    arrival: float = 0.0  # when it was added, on the caller's clock (see Engine.step)

    @property
    def context(self) -> int:
        """Tokens the sequence holds in the KV cache once prefilled."""
        return self.prompt_tokens + self.generated

    @property
    def finished(self) -> bool:
        return self.generated >= self.max_output_tokens

    @property
    def decoding(self) -> bool:
        return self.prefilled >= self.prefill_target


@dataclass
class StepResult:
    """What one iteration did: its duration (emulated s) and the tokens it produced."""

    @property
    def emitted(self) -> list[Sequence]:
        """Every sequence that emitted a token in this iteration."""
        return [s for _, seqs in self.events for s in seqs]

    duration: float
    decode_batch: int
    decode_context: int
    prefill_tokens: int
    prefill_s: float = 0.0
    # (offset in the iteration, sequences that each emit one token then), in time order
    events: list[tuple[float, list[Sequence]]] = field(default_factory=list)
    finished: list[Sequence] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)


class Engine:
    """Waiting queue + running batch bounded by KV blocks and `max_num_seqs`."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        eng = profile.engine
        self.block_size = eng.block_size
        self.total_blocks = max(1, profile.kv_capacity_tokens // eng.block_size)
        self.watermark_blocks = max(1, int(0.01 * self.total_blocks))
        self.max_num_seqs = eng.max_num_seqs
        self.max_batched_tokens = eng.max_num_batched_tokens
        self.free_blocks = self.total_blocks
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._next_id = 0
        self._admit_counter = 0

    # -- queue --------------------------------------------------------------------------
    @property
    def max_sequence_tokens(self) -> int:
        """Longest prompt + output one sequence may hold (context window and KV cache)."""
        return min(self.profile.max_context, self.total_blocks * self.block_size)

    def add(self, prompt_tokens: int, max_output_tokens: int, arrival: float = 0.0) -> Sequence:
        """Queue a request; the caller has checked it fits `max_sequence_tokens`.

        `arrival` (any clock the caller also passes to `step`) keeps a request that arrived
        after an iteration's start out of that iteration."""
        if prompt_tokens < 1 or max_output_tokens < 1:
            raise ValueError("prompt and output must be ≥ 1 token")
        if prompt_tokens + max_output_tokens > self.max_sequence_tokens:
            raise ValueError("sequence longer than the context window / KV cache")
        seq = Sequence(self._next_id, prompt_tokens, max_output_tokens, arrival=arrival)
        seq.prefill_target = prompt_tokens
        self._next_id += 1
        self.waiting.append(seq)
        return seq

    def abort(self, seq: Sequence) -> None:
        """Drop a sequence (client went away); frees its blocks."""
        seq.aborted = True
        if seq in self.running:
            self.running.remove(seq)
            self._free(seq)
        else:
            with contextlib.suppress(ValueError):
                self.waiting.remove(seq)

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.running

    @property
    def kv_usage(self) -> float:
        """Fraction of KV blocks in use (vllm:kv_cache_usage_perc, 0..1)."""
        return 1.0 - self.free_blocks / self.total_blocks

    # -- blocks -------------------------------------------------------------------------
    def _blocks_for(self, tokens: int) -> int:
        return math.ceil(tokens / self.block_size)

    def _free(self, seq: Sequence) -> None:
        self.free_blocks += seq.blocks
        seq.blocks = 0

    def _preempt_last(self, result: StepResult) -> Sequence:
        victim = max(self.running, key=lambda s: s.admitted_order)
        self.running.remove(victim)
        self._free(victim)
        victim.prefilled = 0
        victim.prefill_target = victim.context
        victim.preemptions += 1
        self.waiting.appendleft(victim)
        result.preempted.append(victim)
        return victim

    # -- one iteration --------------------------------------------------------------------
    def step(self, now: float = math.inf) -> StepResult:
        """Plan and account one iteration starting at `now`; returns its duration and
        emitted tokens. Only requests with `arrival <= now` are admitted: a driver that
        runs late must not let a request join an iteration that began before it arrived."""
        p = self.profile
        result = StepResult(0.0, 0, 0, 0)
        # Decoding sequences need a slot for their next token (may preempt the newest).
        decoders = [s for s in self.running if s.decoding]
        for s in sorted(decoders, key=lambda s: s.admitted_order):
            if s not in self.running:
                continue  # preempted below on behalf of an older sequence
            need = self._blocks_for(s.context + 1) - s.blocks
            while need > self.free_blocks and self.running:
                victim = self._preempt_last(result)
                if victim is s:
                    break
            if s in self.running:
                self.free_blocks -= need
                s.blocks += need
        decoders = [s for s in self.running if s.decoding]
        budget = self.max_batched_tokens - len(decoders)
        budget -= sum(s.prefill_target - s.prefilled for s in self.running if not s.decoding)
        # Admission: FIFO, whole prompt's blocks reserved up front, watermark kept free.
        while self.waiting and len(self.running) < self.max_num_seqs and budget > 0:
            s = self.waiting[0]
            if s.arrival > now:
                break  # FIFO: it and everyone behind it arrived after this iteration began
            need = self._blocks_for(s.prefill_target)
            reserve = self.watermark_blocks if self.running else 0
            if self.free_blocks - need < reserve:
                break
            self.waiting.popleft()
            self.free_blocks -= need
            s.blocks = need
            self._admit_counter += 1
            s.admitted_order = self._admit_counter
            self.running.append(s)
            budget -= s.prefill_target  # later admissions only while budget is left
        # Prefill phase first: chunks of admitted prompts, oldest first, one after another;
        # a prompt whose prefill completes releases its first token at that moment.
        budget = self.max_batched_tokens - len(decoders)
        t = 0.0
        for s in sorted(self.running, key=lambda s: s.admitted_order):
            if s.decoding or budget <= 0:
                continue
            c = min(budget, s.prefill_target - s.prefilled)
            t += p.prefill_time(s.prefilled + c) - p.prefill_time(s.prefilled)
            s.prefilled += c
            budget -= c
            result.prefill_tokens += c
            # A re-prefill after preemption emits nothing: its tokens were already sent.
            if s.decoding and s.generated == 0:
                s.generated = 1
                result.events.append((t, [s]))
        result.prefill_s = t
        # Then the decode step: one token for every sequence that was already decoding.
        ctx = sum(s.context for s in decoders)
        if decoders:
            t += p.decode_step_time(len(decoders), ctx)
            for s in decoders:
                s.generated += 1
            result.events.append((t, decoders))
        result.duration = t
        result.decode_batch, result.decode_context = len(decoders), ctx
        for _, seqs in result.events:
            for s in seqs:
                if s.finished:
                    self.running.remove(s)
                    self._free(s)
                    result.finished.append(s)
        return result
