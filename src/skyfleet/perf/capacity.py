"""Steady-state behaviour of one replica under a request rate, and its capacity at an SLO.

A replica runs continuous batching. At arrival rate λ with mean prompt I and output O:

- prefill takes a share ρ = λ·prefill(I) of the engine's time, so each decode step is
  stretched: TPOT = decode_step(B, B·(I + O/2)) / (1 − ρ);
- by Little's law the running batch is B = λ·(TTFT + (O − 1)·TPOT), solved as a fixed point;
- TTFT = prefill(I) + half a step of residual + queueing for the prefill "server", whose
  waiting time has an exponential tail (M/G/1 heavy-traffic form) used for percentiles.

The rate is feasible while B fits the KV cache and `max_num_seqs`, ρ < 1 and the fixed
point converges. Capacity at an SLO is the largest feasible λ meeting both SLOs, found by
bisection (feasibility is monotone in λ, so capacity is monotone in the SLO).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from skyfleet.perf.profile import Profile


@dataclass(frozen=True)
class RequestSizes:
    """Mean prompt and output lengths, in tokens."""

    input_tokens: float
    output_tokens: float

    @property
    def avg_context(self) -> float:
        """Mean KV footprint of a running sequence (output grows from 0 to O)."""
        return self.input_tokens + self.output_tokens / 2.0


@dataclass(frozen=True)
class SteadyState:
    """Predicted means (and a TTFT percentile) at one arrival rate; `stable` False = overload."""

    rate: float
    stable: bool
    batch: float
    prefill_share: float
    ttft_mean: float
    ttft_p: float
    tpot_mean: float
    e2e_mean: float
    output_tokens_per_s: float


def _ttft_quantile(service: float, rho: float, p: float) -> float:
    """Waiting-time quantile of a queue with exponential tail P(W>t) = ρ·exp(−t(1−ρ)/(s·(1+ρ)/2)).

    Matches the M/D/1 mean wait ρs/(2(1−ρ)) in the mean and gives the usual heavy tail.
    """
    if rho <= 0:
        return 0.0
    tail = 1.0 - p
    if rho <= tail:
        return 0.0
    scale = service * (1 + rho) / 2.0 / (1.0 - rho)
    return scale * math.log(rho / tail)


def steady_state(
    profile: Profile, rate: float, sizes: RequestSizes, percentile: float = 0.99
) -> SteadyState:
    """Predict one replica's steady state at `rate` requests/s."""
    i, o = sizes.input_tokens, max(sizes.output_tokens, 1.0)
    pre = profile.prefill_time(i)
    rho = rate * pre
    max_b = profile.max_concurrency(sizes.avg_context)
    unstable = SteadyState(
        rate, False, float(max_b), rho, math.inf, math.inf, math.inf, math.inf, 0
    )
    if rate <= 0:
        step = profile.decode_step_time(1, sizes.avg_context)
        return SteadyState(0.0, True, 0.0, 0.0, pre + step / 2, pre + step / 2, step, 0.0, 0.0)
    if rho >= 1.0 or max_b == 0:
        return unstable
    b = 1.0
    tpot = ttft = 0.0
    for _ in range(200):
        step = profile.decode_step_time(b, b * sizes.avg_context)
        tpot = step / (1.0 - rho)
        wait_mean = rho * pre * (1 + rho) / 2.0 / (1.0 - rho) / 1.0
        ttft = pre + step / 2.0 + wait_mean
        b_new = rate * (ttft + (o - 1.0) * tpot)
        if b_new > max_b:
            return unstable
        if abs(b_new - b) < 1e-6 * max(1.0, b):
            b = b_new
            break
        b = b_new
    else:
        return unstable
    ttft_p = pre + step / 2.0 + _ttft_quantile(pre, rho, percentile)
    e2e = ttft + (o - 1.0) * tpot
    return SteadyState(rate, True, b, rho, ttft, ttft_p, tpot, e2e, rate * o)


def max_rate_at_slo(
    profile: Profile,
    sizes: RequestSizes,
    ttft_slo_s: float,
    tpot_slo_s: float,
    percentile: float = 0.99,
) -> float:
    """Highest request rate (req/s) one replica sustains with TTFT_p ≤ SLO and TPOT ≤ SLO.

    Returns 0.0 when even a single request misses the SLO.
    """

    def ok(rate: float) -> bool:
        s = steady_state(profile, rate, sizes, percentile)
        return s.stable and s.ttft_p <= ttft_slo_s and s.tpot_mean <= tpot_slo_s

    if not ok(1e-9):
        return 0.0
    hi = 1.0 / max(profile.prefill_time(sizes.input_tokens), 1e-9)
    lo = 0.0
    for _ in range(60):
        mid = (lo + hi) / 2.0
        if ok(mid):
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-6 * max(hi, 1e-9):
            break
    return lo


def max_throughput(profile: Profile, sizes: RequestSizes) -> float:
    """Highest stable request rate with no SLO (the saturation point)."""
    return max_rate_at_slo(profile, sizes, math.inf, math.inf)
