"""A minimal discrete-event iteration-level scheduler: the oracle for `steady_state`.

Poisson arrivals; every iteration admits all waiting requests (`max_num_seqs` permitting),
prefills them one after another (each prompt's first token when its own prefill ends), then
runs one decode step for the sequences already decoding: `Profile.iteration_time`, as in
skyfleet.emulator.engine. Fixed prompt/output sizes, so cohorts leave in order and each
iteration is O(1).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

import numpy as np

from skyfleet.perf import Profile, RequestSizes


@dataclass(frozen=True)
class SimResult:
    ttft_mean: float
    ttft_p99: float
    tpot_mean: float
    batch_mean: float


def simulate(
    profile: Profile, rate: float, sizes: RequestSizes, n_requests: int, seed: int = 1
) -> SimResult:
    """Run `n_requests` Poisson arrivals through the scheduler; drop the first 10% as warm-up."""
    rng = random.Random(seed)
    i_tok, o_tok = int(sizes.input_tokens), int(sizes.output_tokens)
    arrivals: list[float] = []
    t = 0.0
    for _ in range(n_requests):
        t += rng.expovariate(rate)
        arrivals.append(t)
    max_seqs = profile.max_concurrency(sizes.avg_context)
    now = 0.0
    nxt = 0  # next arrival index not yet queued
    waiting: deque[int] = deque()
    cohorts: deque[tuple[int, int, float]] = deque()  # (iteration admitted, count, t_first)
    decoding = 0
    admit_weighted = 0  # Σ count · iteration admitted, for the context sum
    it = 0
    ttft: list[float] = []
    tpot_sum, tpot_n = 0.0, 0
    busy_b, busy_t = 0.0, 0.0
    while len(ttft) < n_requests:
        while nxt < n_requests and arrivals[nxt] <= now:
            waiting.append(nxt)
            nxt += 1
        if not waiting and decoding == 0:
            now = arrivals[nxt]
            continue
        room = max(0, max_seqs - decoding)
        admitted = [waiting.popleft() for _ in range(min(room, len(waiting)))]
        context = (i_tok + it) * decoding - admit_weighted
        dt = profile.iteration_time(decoding, context, [i_tok] * len(admitted))
        pre = profile.prefill_time(i_tok)
        for n, r in enumerate(admitted):
            ttft.append(now + (n + 1) * pre - arrivals[r])
        t_first = now + len(admitted) * pre  # (cohort's last first token; close enough)
        busy_b += (decoding + len(admitted)) * dt
        busy_t += dt
        now += dt
        it += 1
        # Sequences that received their last token this iteration leave.
        while cohorts and it - cohorts[0][0] >= o_tok - 1:
            a_it, cnt, t_cohort = cohorts.popleft()
            decoding -= cnt
            admit_weighted -= cnt * a_it
            if o_tok > 1:
                tpot_sum += cnt * (now - t_cohort) / (o_tok - 1)
                tpot_n += cnt
        if admitted and o_tok > 1:
            cohorts.append((it, len(admitted), t_first))
            decoding += len(admitted)
            admit_weighted += len(admitted) * it
    warm = n_requests // 10
    arr = np.array(ttft[warm:])
    return SimResult(
        ttft_mean=float(arr.mean()),
        ttft_p99=float(np.quantile(arr, 0.99)),
        tpot_mean=tpot_sum / max(tpot_n, 1),
        batch_mean=busy_b / max(now, 1e-12),
    )
