"""Steady-state behaviour of one replica under a request rate, and its capacity at an SLO.

The replica is an iteration-level (continuous-batching) scheduler — the one the emulator
runs (skyfleet.emulator.engine) and `Profile.iteration_time` times: a request that arrives
waits for the current iteration to end; the next iteration first prefills the admitted
prompts one after another (FIFO, each `prefill_time(prompt)`; a prompt's first token comes
when its own prefill ends), then runs one decode step for the sequences already decoding.
With Poisson arrivals at rate λ, mean prompt I and output O (the first token comes from the
prefill), P = prefill_time(I) and d₁ = decode_per_seq + decode_per_ctx_token·avg_context:

- admissions per iteration k follow a linear Poisson autoregression while busy:
  k' ~ Poisson(λ·T), T = d0 + d1·B + P·k, B = the k of the O − 1 iterations before (the
  decode batch). Its mean is m = λd0/(1 − λP − λ(O−1)d1) and its second moments (Var k,
  Var B, Cov(B, k): an AR(O) process driven by Poisson noise) are spectral integrals;
- TPOT (what a decoding sequence sees: iterations weighted by their batch) is
  E[B·T]/E[B] = d0 + d1·(E[B] + Var B/E[B]) + P·(m + Cov(B, k)/E[B]), plus, spread over its
  O − 1 tokens, the rest of the iteration it was admitted in. The batch is overdispersed
  (a long iteration admits more, which lengthens the next ones), which a Poisson batch
  misses by up to 15–30 % at 70–90 % load for prefill-heavy requests;
- iteration length T (time average): E[T] = (q·decode_base + d1·B) / (1 − λP), where
  B = λ(O−1)·TPOT is the decode batch (Little's law) and q = 1 − e^(−B) the chance it is
  non-empty; every iteration also prefills the λ·E[T] requests that arrived during the
  previous one — prefill stretching decode;
- Var[T] from the Poisson number of admissions (fed back through the previous iteration's
  length) and the decode batch (≈ Poisson): Var = (P²λE[T] + d₁²B + d₀²q(1−q)) / (1 − λ²P²);
  the residual an arrival waits is R = E[T²]/(2E[T]);
- TTFT = p_idle·P + (1 − p_idle)·(R + P·(1 + λR)): the residual, the prefills of the
  λR requests that arrived before it in the same window, then its own. p_idle = e^(−λ·E2E)
  is the chance the engine is idle (no request in the system), when it starts at once;
- the TTFT percentile comes from the same mixture, with T's distribution taken as
  decode + P·Poisson(λE[T]) and the arrival uniform in a length-biased iteration.

Near the KV / `max_num_seqs` limit c, a request also waits for a slot: M/G/c by Erlang C
with Hayward's approximation for the overdispersed running count (peakedness z = Var B/E[B]:
load a/z on c/z slots, wait × z) and the Allen–Cunneen factor (1 + output_scv)/2.

The rate is feasible while λP + λ(O−1)d1 < 1 and the running sequences fit the KV cache and
`max_num_seqs`. Capacity at an SLO is the largest feasible λ meeting both SLOs, found by
bisection. Not modelled: chunked prefill of prompts beyond `max_num_batched_tokens`,
preemption. See docs/perf.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from skyfleet.perf.profile import Profile


@dataclass(frozen=True)
class RequestSizes:
    """Mean prompt and output lengths, in tokens.

    `output_scv` is the squared coefficient of variation of the output length: 0 for fixed
    lengths (the default), 1 for exponential-like ones (≈0.43 for the emulator's log-normal
    with σ = 0.6). Longer outputs stay longer, so a running sequence holds on average
    I + O·(1 + scv)/2 tokens; near the concurrency limit it also sets the KV-slot wait.
    """

    input_tokens: float
    output_tokens: float
    output_scv: float = 0.0

    @property
    def avg_context(self) -> float:
        """Mean KV footprint of a running sequence (its output grows from 0 to O)."""
        return self.input_tokens + self.output_tokens * (1.0 + self.output_scv) / 2.0


@dataclass(frozen=True)
class SteadyState:
    """Predicted means (and a TTFT percentile) at one arrival rate; `stable` False = overload.

    `batch` is the mean number of running sequences (admitted, holding KV); `prefill_share`
    the fraction of engine time spent on prefill.
    """

    rate: float
    stable: bool
    batch: float
    prefill_share: float
    ttft_mean: float
    ttft_p: float
    tpot_mean: float
    e2e_mean: float
    output_tokens_per_s: float


@dataclass(frozen=True)
class _Iter:
    """Solved iteration-level quantities at one rate."""

    tpot: float
    t_mean: float
    t_second: float
    decode_mean: float
    prefill: float
    rate: float
    peakedness: float = 1.0  # Var/mean of the decode batch (1 = Poisson)


def _solve(profile: Profile, rate: float, sizes: RequestSizes) -> _Iter | None:
    """Fixed point of the iteration model, or None when the rate is past saturation."""
    o = max(sizes.output_tokens, 1.0)
    pre = profile.prefill_time(sizes.input_tokens)
    d0 = profile.decode_base_s
    d1 = profile.decode_per_seq_s + profile.decode_per_ctx_token_s * sizes.avg_context
    kappa_all = 1.0 - rate * pre
    kappa_dec = kappa_all - rate * (o - 1.0) * d1
    if kappa_dec <= 0.0:
        return None
    # Admissions per iteration: k' ~ Poisson(λ·(d0 + d1·B + P·k)), B = the k of the O − 1
    # iterations before: a linear Poisson autoregression; its moments give what a decoding
    # sequence sees (iterations weighted by their batch: E[B·T]/E[B]).
    m, var_k, var_b, cov_bk = _admission_moments(rate * pre, rate * d1, rate * d0, o, kappa_dec)
    b_mean = (o - 1.0) * m
    if b_mean > 0.0:
        step = d0 + d1 * (b_mean + var_b / b_mean) + pre * (m + cov_bk / b_mean)
    else:
        step = d0 + d1
    b_dec = rate * (o - 1.0) * step
    q = -math.expm1(-b_dec)
    # Iterations while sequences are decoding (the ones an arrival mostly lands in): the
    # decode step at the batch given that it is non-empty, plus the admissions' prefills.
    d_busy = d0 + d1 * b_dec / max(q, 1e-12)
    t_mean = d_busy / kappa_all
    var_dec = d1 * d1 * b_dec
    var_t = (pre * pre * rate * t_mean + var_dec) / (1.0 - (rate * pre) ** 2)
    t_second = var_t + t_mean * t_mean
    # The iteration a sequence is admitted in: after its prefill come the prefills of those
    # admitted with it behind it, and the decode step; spread over its O − 1 later tokens.
    if m > 0.0:
        behind = pre * max(var_k / m + m - 1.0, 0.0) / 2.0  # E[k(k − 1)]/2E[k]
        rest = q * d0 + d1 * (b_mean + cov_bk / m) + behind
    else:
        rest = q * d0
    tpot = step + (rest / (o - 1.0) if o > 1.0 else 0.0)
    return _Iter(
        tpot=tpot,
        t_mean=t_mean,
        t_second=t_second,
        decode_mean=d_busy,
        prefill=pre,
        rate=rate,
        peakedness=max(1.0, var_b / b_mean) if b_mean > 0.0 else 1.0,
    )


def _admission_moments(
    c1: float, c: float, a: float, o: float, kappa: float
) -> tuple[float, float, float, float]:
    """Moments of k_n ~ Poisson(a + c1·k_{n−1} + c·(k_{n−2} + … + k_{n−O})): the mean m,
    Var k, Var B and Cov(B, k) for B_n = k_{n−1} + … + k_{n−O+1} (the decode batch).

    k − m is an AR(O) process driven by noise of variance m; the (co)variances are its
    spectral integrals (1/2π)∫|H(ω)|²/|A(ω)|² dω, taken over [0, π] (the integrands are
    even) on a grid that is geometric near ω = 0, where 1/|A|² peaks with width ~κ/O, and
    fine enough elsewhere for the window's oscillations (period 2π/(O − 1)).
    """
    m = a / kappa
    n_out = round(o) - 1  # B's window: the O − 1 iterations a sequence decodes in
    if m <= 0.0 or n_out < 1:
        return m, m, 0.0, 0.0
    span = float(n_out + 1)
    knee = min(4.0 / span, math.pi)
    near = np.geomspace(max(kappa, 1e-6) * 1e-3 / span, knee, 400, endpoint=False)
    w = np.concatenate(([0.0], near, np.linspace(knee, math.pi, 4 * n_out + 64)))
    z = np.exp(-1j * w)
    # Σ_{j=1}^{n} z^j, with the removable singularity at ω = 0 filled in.
    with np.errstate(divide="ignore", invalid="ignore"):
        window = np.where(
            np.abs(1.0 - z) > 1e-9, z * (1.0 - np.exp(-1j * n_out * w)) / (1.0 - z), n_out
        )
    poly = 1.0 - c1 * z - c * z * window  # A(z) = 1 − c1·z − c·(z² + … + z^O)
    inv = 1.0 / np.abs(poly) ** 2

    def integral(f: np.ndarray) -> float:
        return m * float(np.trapezoid(f, w)) / math.pi

    var_k = integral(inv)
    var_b = integral(np.abs(window) ** 2 * inv)
    cov_bk = integral(window.real * inv)
    return m, var_k, var_b, cov_bk


def _ttft_quantile(it: _Iter, p_idle: float, p: float) -> float:
    """TTFT quantile of the idle/busy mixture described in the module docstring."""
    lam, pre, dec = it.rate, it.prefill, it.decode_mean
    # Admissions per iteration form a Markov chain: k' ~ Poisson(λ·(decode + P·k)).
    m = lam * it.t_mean
    kmax = int(m + 10.0 * math.sqrt(m) + 10.0)
    k = np.arange(kmax + 1, dtype=float)
    w = np.maximum(dec + pre * k, 1e-12)  # iteration length after k admissions
    trans = _poisson_pmf(k[None, :], lam * w[:, None])
    trans /= trans.sum(axis=1, keepdims=True)
    dist = _poisson_pmf(k, m)
    dist /= dist.sum()
    for _ in range(200):
        nxt = dist @ trans
        if float(np.abs(nxt - dist).sum()) < 1e-10:
            dist = nxt
            break
        dist = nxt
    wk = w * dist
    wk /= wk.sum()  # length-biased: the iteration an arrival lands in
    # Arriving a fraction u into it: wait (1 − u)·W, then J ~ Poisson(λuW) prefills of
    # those that came before it in that iteration, then its own.
    u = (np.arange(16) + 0.5) / 16.0
    jmax = int(lam * w.max() + 8.0 * math.sqrt(lam * w.max()) + 8.0)
    j = np.arange(jmax + 1, dtype=float)
    mean_j = lam * u[None, :, None] * w[:, None, None]
    pj = _poisson_pmf(j[None, None, :], mean_j)
    weights = ((wk[:, None, None] / len(u)) * pj).ravel()
    times = ((1.0 - u[None, :, None]) * w[:, None, None] + pre * (1.0 + j[None, None, :])).ravel()
    keep = weights > weights.max() * 1e-12  # drop negligible mass before sorting
    times, weights = times[keep], weights[keep]
    order = np.argsort(times)
    times, cum = times[order], np.cumsum(weights[order])
    total = float(cum[-1])
    target_busy = p  # solve p_idle·1[t ≥ P] + (1 − p_idle)·F_busy(t) = p
    if p_idle > 0.0:
        # Below P only the busy part counts; at or above P the idle mass is added.
        below = (1.0 - p_idle) * float(np.interp(pre, times, cum, left=0.0)) / total
        if below < p:
            target_busy = (p - p_idle) / (1.0 - p_idle) if p > p_idle else 0.0
            at = max(target_busy, 0.0) * total
            idx = int(np.searchsorted(cum, at))
            return max(pre, float(times[min(idx, len(times) - 1)]))
        target_busy = p / (1.0 - p_idle)
    idx = int(np.searchsorted(cum, target_busy * total))
    return float(times[min(idx, len(times) - 1)])


def _erlang_c(servers: int, load: float) -> float:
    """Probability that an arrival waits in an M/M/c queue with offered load `load` < c."""
    if load <= 0.0 or load + 9.0 * math.sqrt(load) < servers:
        return 0.0  # a Poisson number of busy slots this far below c never fills them
    # Erlang B by its stable recursion, then C = B / (1 − ρ(1 − B)).
    b = 1.0
    for n in range(1, servers + 1):
        b = load * b / (n + load * b)
    rho = load / servers
    return b / (1.0 - rho * (1.0 - b))


def _erlang_c_frac(servers: float, load: float) -> float:
    """Erlang C at a fractional number of servers (linear between the integers around it)."""
    lo = math.floor(servers)
    frac = servers - lo
    c_lo = _erlang_c(lo, load) if lo > load else 1.0
    if frac == 0.0:
        return c_lo
    return (1.0 - frac) * c_lo + frac * _erlang_c(lo + 1, load)


def _poisson_pmf(k: np.ndarray, mean: np.ndarray | float) -> np.ndarray:
    from scipy.special import gammaln

    mu = np.maximum(np.asarray(mean, dtype=float), 1e-300)
    out: np.ndarray = np.exp(k * np.log(mu) - mu - gammaln(k + 1.0))
    return out


def steady_state(
    profile: Profile, rate: float, sizes: RequestSizes, percentile: float = 0.99
) -> SteadyState:
    """Predict one replica's steady state at `rate` requests/s (Poisson arrivals)."""
    o = max(sizes.output_tokens, 1.0)
    alone = profile.prefill_time(sizes.input_tokens)
    max_b = profile.max_concurrency(sizes.avg_context)
    if rate <= 0:
        tpot = profile.decode_step_time(1, sizes.avg_context)
        e2e = alone + (o - 1.0) * tpot
        return SteadyState(0.0, True, 0.0, 0.0, alone, alone, tpot, e2e, 0.0)
    unstable = SteadyState(
        rate, False, float(max_b), 1.0, math.inf, math.inf, math.inf, math.inf, 0.0
    )
    if max_b == 0:
        return unstable
    it = _solve(profile, rate, sizes)
    if it is None:
        return unstable
    residual = it.t_second / (2.0 * it.t_mean)
    busy_ttft = residual + alone * (1.0 + rate * residual)
    ttft = busy_ttft
    p_idle = 0.0
    for _ in range(50):
        p_idle = math.exp(-rate * (ttft + (o - 1.0) * it.tpot))
        new = p_idle * alone + (1.0 - p_idle) * busy_ttft
        done = abs(new - ttft) <= 1e-12 + 1e-9 * ttft
        ttft = new
        if done:
            break
    running = rate * (ttft - (1.0 - p_idle) * residual + (o - 1.0) * it.tpot)
    if running >= max_b:
        return unstable
    # Queueing for a KV slot: M/G/c with c = max concurrency (Erlang C, Allen–Cunneen).
    hold = running / rate
    # The running count is overdispersed (admissions come in bursts fed back through the
    # iteration length): Hayward's approximation treats traffic of peakedness z offered to
    # c slots as Poisson traffic a/z offered to c/z slots.
    z = it.peakedness
    wait_prob = _erlang_c_frac(max_b / z, running / z)
    wait_scale = z * hold / (max_b - running) * (1.0 + sizes.output_scv) / 2.0
    ttft += wait_prob * wait_scale
    e2e = ttft + (o - 1.0) * it.tpot
    ttft_p = _ttft_quantile(it, p_idle, percentile)
    tail = 1.0 - percentile
    if wait_prob > tail > 0.0:
        ttft_p += wait_scale * math.log(wait_prob / tail)
    share = min(1.0, rate * alone)
    return SteadyState(rate, True, running, share, ttft, ttft_p, it.tpot, e2e, rate * o)


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
    o = max(sizes.output_tokens, 1.0)
    pre = profile.prefill_time(sizes.input_tokens)
    d1 = profile.decode_per_seq_s + profile.decode_per_ctx_token_s * sizes.avg_context
    hi = 1.0 / max(pre + (o - 1.0) * d1, 1e-12)
    lo = 0.0
    for _ in range(60):
        mid = (lo + hi) / 2.0
        if ok(mid):
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-4 * max(hi, 1e-9):
            break
    return lo


def max_throughput(profile: Profile, sizes: RequestSizes) -> float:
    """Highest stable request rate with no SLO (the saturation point)."""
    return max_rate_at_slo(profile, sizes, math.inf, math.inf)


def rate_at_concurrency(profile: Profile, sizes: RequestSizes, users: float) -> SteadyState:
    """Steady state of a closed loop of `users` clients (each sends again on completion).

    Solved as the open-loop rate whose requests in the system, λ·E2E, equal `users` (or the
    saturation point when `users` exceeds what the engine can hold).
    """
    lo, hi = 0.0, max_throughput(profile, sizes)
    if hi <= 0.0:
        return steady_state(profile, 0.0, sizes)
    top = steady_state(profile, hi, sizes)
    if top.stable and top.rate * top.e2e_mean <= users:
        return top
    for _ in range(60):
        mid = (lo + hi) / 2.0
        s = steady_state(profile, mid, sizes)
        if s.stable and mid * s.e2e_mean <= users:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-6 * max(hi, 1e-9):
            break
    return steady_state(profile, lo, sizes)
