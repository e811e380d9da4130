"""Run the engine core in virtual time (no clock, no sockets) under given arrivals.

This is the server's driver loop with sleeping replaced by advancing a number; it shows
what the scheduler itself does, free of event-loop lag. It checks the engine against
`skyfleet.perf.steady_state` (long Poisson runs), and a real emulator run against the
engine on the very same arrivals (common random numbers: the queue's own randomness,
which makes the mean TTFT of a few hundred requests vary by ±10 %, cancels out).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from statistics import fmean

from skyfleet.emulator.engine import Engine
from skyfleet.perf import Profile


@dataclass
class Trace:
    """Per-request times (emulated s) of one virtual run, indexed by arrival order."""

    arrivals: list[float]
    first: list[float] = field(default_factory=list)
    last: list[float] = field(default_factory=list)
    tokens: list[list[float]] = field(default_factory=list)  # release time of every token
    running_area: float = 0.0  # ∫ running sequences dt over [arrivals[lo], arrivals[hi])
    waiting_area: float = 0.0

    def window(self, t0: float, t1: float) -> tuple[float, float]:
        """(mean TTFT, mean inter-token time) of releases in [t0, t1), as vLLM's histograms
        would report them between two scrapes."""
        ttft = [f - a for a, f in zip(self.arrivals, self.first, strict=True) if t0 <= f < t1]
        gaps = [b - a for ts in self.tokens for a, b in itertools.pairwise(ts) if t0 <= b < t1]
        return fmean(ttft), fmean(gaps)


def run_trace(
    profile: Profile,
    arrivals: list[float],
    prompt_tokens: int,
    output_tokens: int,
    span: tuple[int, int] | None = None,
) -> Trace:
    """Feed requests arriving at `arrivals` (sorted, emulated s); record every token."""
    eng = Engine(profile)
    n = len(arrivals)
    tr = Trace(list(arrivals), [0.0] * n, [0.0] * n, [[] for _ in range(n)])
    lo, hi = span or (0, n - 1)
    t_start, t_end = arrivals[lo], arrivals[hi]
    index: dict[int, int] = {}
    now, k = 0.0, 0
    while k < n or not eng.idle:
        if eng.idle and k < n:
            now = max(now, arrivals[k])
        while k < n and arrivals[k] <= now:
            index[eng.add(prompt_tokens, output_tokens).seq_id] = k
            k += 1
        res = eng.step()
        overlap = max(0.0, min(now + res.duration, t_end) - max(now, t_start))
        tr.running_area += overlap * (len(eng.running) + len(res.finished))
        tr.waiting_area += overlap * len(eng.waiting)
        for offset, seqs in res.events:
            for s in seqs:
                i = index[s.seq_id]
                tr.tokens[i].append(now + offset)
        now += res.duration
    for i, ts in enumerate(tr.tokens):
        tr.first[i], tr.last[i] = ts[0], ts[-1]
    return tr


@dataclass(frozen=True)
class VirtualRun:
    """Means over the measured requests (warm-up and drain excluded)."""

    ttft_mean: float
    tpot_mean: float
    running_mean: float  # time-averaged admitted sequences (holding KV)
    waiting_mean: float  # time-averaged queue length
    requests: int


def poisson_arrivals(rate: float, requests: int, seed: int = 0) -> list[float]:
    """Seeded Poisson arrival times (s) at `rate` per second."""
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(requests):
        t += rng.expovariate(rate)
        out.append(t)
    return out


def run_poisson(
    profile: Profile,
    rate: float,
    prompt_tokens: int,
    output_tokens: int,
    requests: int = 4000,
    seed: int = 0,
    warmup_fraction: float = 0.2,
) -> VirtualRun:
    """Feed `requests` Poisson arrivals at `rate`/s; measure the middle of the run."""
    arrivals = poisson_arrivals(rate, requests, seed)
    lo, hi = int(requests * warmup_fraction), int(requests * (1 - warmup_fraction))
    tr = run_trace(profile, arrivals, prompt_tokens, output_tokens, (lo, hi - 1))
    ids = range(lo, hi)
    per_token = max(output_tokens - 1, 1)
    span = max(arrivals[hi - 1] - arrivals[lo], 1e-12)
    return VirtualRun(
        fmean(tr.first[i] - arrivals[i] for i in ids),
        fmean((tr.last[i] - tr.first[i]) / per_token for i in ids),
        tr.running_area / span,
        tr.waiting_area / span,
        len(ids),
    )
