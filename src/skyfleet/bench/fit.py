"""Turn a sweep's measurements into a calibrated `Profile` (pure: no I/O).

Preferred path — **engine iterations** (`skyfleet.bench.iterations`), when the endpoint
streams one token per chunk:

- *decode step*: every iteration without a prefill is a measured (B, C, seconds) point.
  They are grouped by batch and context per sequence (10 % bins); each group's mean
  (outliers dropped) is one point weighted by √n, and `fit_profile` solves the three
  decode terms;
- *prefill*: an iteration that also ran prefills took decode_step(B, C) + Σ prefill(P);
  its excess over the fitted step, grouped by the prompts prefilled, gives prefill points
  in engine time. The idle probes' median TTFT is the client overhead + prefill(P), so
  one weighted NNLS over both kinds of rows solves prefill_base, prefill_per_token (and
  the quadratic term if asked) *and* the per-request client/network overhead, which is
  reported separately: the profile describes the engine, not the network path.

No profile — when the closed-loop runs kept several requests in flight but the engine
decoded about one at a time (`serial_batch`: it queues instead of batching, as
llama-cpp-python's server does), a profile's batch terms would be invented: the fit is
`withheld` and a warning reports what was measured at batch 1.

Fallback — **TPOT**, when no iterations are visible (several tokens per chunk, or a
non-streaming run): prefill is the probes' TTFT line (the overhead stays in
prefill_base_s), and each run gives one decode point (B, C, step) with B from Little's
law over the decode phase and step = mean TPOT × (1 − ρ), ρ = send rate ×
prefill(mean prompt): `skyfleet.perf.steady_state`'s stretch, inverted.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import TYPE_CHECKING

import numpy as np

from skyfleet.bench.iterations import Iteration
from skyfleet.perf import DecodePoint, PrefillPoint, Profile, fit_profile
from skyfleet.perf.profile import relative_nnls

if TYPE_CHECKING:
    from skyfleet.bench.sweep import SweepPoint

TIMING_PARAMS = (
    "prefill_base_s",
    "prefill_per_token_s",
    "decode_base_s",
    "decode_per_seq_s",
    "decode_per_ctx_token_s",
)  # what a sweep fits (prefill_quad_s too when asked)
MIN_GROUP = 3  # iterations a group needs to count
SERIAL_BATCH = 1.5  # a loaded run whose decode batch stays below this: no batching
CONTEXT_BIN = math.log(1.1)  # context per sequence grouped in 10 % steps


@dataclass
class Fit:
    """A fitted profile, the points behind it, and how it was obtained."""

    profile: Profile
    method: str  # iterations | tpot
    prefill_points: list[PrefillPoint] = field(default_factory=list)
    decode_points: list[DecodePoint] = field(default_factory=list)
    client_overhead_s: float | None = None  # per request, client + network; None if unknown
    iterations: int = 0  # engine iterations observed
    warnings: list[str] = field(default_factory=list)
    withheld: bool = False  # the runs cannot determine the profile: do not use or save it


def robust_mean(xs: Sequence[float]) -> float:
    """Mean after dropping values over 4 robust standard deviations (1.4826 MAD) from the
    median. Not the median itself: consecutive iteration durations share their boundary
    timestamp, so the client's jitter cancels in their mean but not in their median."""
    a = np.asarray(xs, dtype=float)
    med = float(np.median(a))
    mad = 1.4826 * float(np.median(np.abs(a - med)))
    keep = a[np.abs(a - med) <= 4.0 * mad] if mad > 0 else a[a == med]
    return float(keep.mean())


def decode_points(iters: Sequence[Iteration]) -> list[DecodePoint]:
    """Mean step (outliers dropped) of the prefill-free iterations per (batch, context per
    sequence) group."""
    groups: defaultdict[tuple[int, int], list[Iteration]] = defaultdict(list)
    for it in iters:
        if not it.prefills and it.batch > 0 and it.duration > 0:
            groups[(it.batch, round(math.log(it.context / it.batch) / CONTEXT_BIN))].append(it)
    return [
        DecodePoint(
            batch=b,
            context=median(i.context for i in g),
            seconds=robust_mean([i.duration for i in g]),
            weight=math.sqrt(len(g)),
        )
        for (b, _), g in sorted(groups.items())
        if len(g) >= MIN_GROUP
    ]


def _prefill_rows(
    prof: Profile, iters: Sequence[Iteration], quadratic: bool
) -> tuple[list[list[float]], list[float], list[float], list[PrefillPoint]]:
    """Rows [k, ΣP, (ΣP²), 0] → mean excess over the decode step, per prompt set."""
    budget = prof.engine.max_num_batched_tokens
    groups: defaultdict[tuple[int, ...], list[float]] = defaultdict(list)
    for it in iters:
        if it.prefills and sum(it.prefills) + it.batch <= budget // 2:  # no split chunks
            excess = it.duration - prof.decode_step_time(it.batch, it.context)
            groups[tuple(sorted(it.prefills))].append(excess)
    rows, ys, ws, points = [], [], [], []
    for key, xs in sorted(groups.items()):
        if len(xs) < MIN_GROUP:
            continue
        total = float(sum(key))
        sq = [float(sum(p * p for p in key))] if quadratic else []
        rows.append([float(len(key)), total, *sq])
        ys.append(robust_mean(xs))
        ws.append(math.sqrt(len(xs)))
        if len(key) == 1:
            points.append(PrefillPoint(tokens=total, seconds=ys[-1], weight=ws[-1]))
    return rows, ys, ws, points


def _probes(points: Sequence[SweepPoint]) -> list[tuple[float, float, int]]:
    """(prompt tokens, median TTFT, requests) of each idle probe run."""
    return [
        (p.summary.mean_input_tokens, p.summary.ttft.p50, p.summary.ttft.count)
        for p in points
        if p.kind == "probe" and p.summary.ttft.count
    ]


def _fit_from_iterations(
    base: Profile, points: Sequence[SweepPoint], iters: list[Iteration], quadratic: bool
) -> Fit | None:
    dec = decode_points(iters)
    if len(dec) < 3 or len({d.batch for d in dec}) < 2:
        return None
    prof = fit_profile(base, decode=dec, source="bench")
    rows, ys, ws, pre = _prefill_rows(prof, iters, quadratic)
    probes = _probes(points)
    if not rows or len(probes) < 2:
        fit = Fit(prof, "iterations", decode_points=dec, iterations=len(iters))
        fit.profile, fit.prefill_points = _prefill_from_probes(prof, points, quadratic, fit)
        fit.warnings.append("no prefill seen under load: the client overhead stays in prefill")
        return fit
    width = len(rows[0])
    a = [[*r, 0.0] for r in rows]
    for n, ttft, count in probes:
        a.append([1.0, n, *([n * n] if quadratic else []), 1.0])
        ys.append(ttft)
        ws.append(math.sqrt(count))
    x = relative_nnls(np.array(a), np.array(ys), np.array(ws))
    overhead = float(x[width])
    upd = {
        "prefill_base_s": float(x[0]),
        "prefill_per_token_s": float(x[1]),
        "prefill_quad_s": float(x[2]) if quadratic else 0.0,
    }
    prof = prof.model_copy(update=upd)
    pre += [PrefillPoint(tokens=n, seconds=t - overhead, weight=math.sqrt(c)) for n, t, c in probes]
    return Fit(prof, "iterations", pre, dec, overhead, len(iters))


def _line_points(pts: list[PrefillPoint]) -> list[PrefillPoint]:
    """Two points on the least-squares line through `pts` (so the fit stays linear)."""
    x = np.array([p.tokens for p in pts])
    y = np.array([p.seconds for p in pts])
    slope, icpt = np.polyfit(x, y, 1)
    slope, icpt = max(float(slope), 0.0), max(float(icpt), 0.0)
    lo, hi = float(x.min()), float(x.max())
    return [PrefillPoint(tokens=t, seconds=icpt + slope * t) for t in (lo, hi)]


def _prefill_from_probes(
    prof: Profile, points: Sequence[SweepPoint], quadratic: bool, fit: Fit
) -> tuple[Profile, list[PrefillPoint]]:
    """Prefill from the idle probes' TTFT alone (client overhead included)."""
    pre = [PrefillPoint(tokens=n, seconds=t) for n, t, _ in _probes(points)]
    if len(pre) < 2:
        fit.warnings.append("not enough streamed probe runs to fit prefill (needs streaming)")
        return prof, pre
    prof = fit_profile(prof, prefill=pre if quadratic else _line_points(pre), source="bench")
    if not quadratic:
        prof = prof.model_copy(update={"prefill_quad_s": 0.0})
    return prof, pre


def _fit_from_tpot(base: Profile, points: Sequence[SweepPoint], quadratic: bool) -> Fit:
    fit = Fit(base, "tpot")
    prof, pre = _prefill_from_probes(base, points, quadratic, fit)
    for p in points:
        s = p.summary
        if not s.tpot.count or not s.completed or s.departure_rate < 0.9 * s.send_rate:
            continue  # no streaming, or not a steady state (the queue grew)
        idle = p.kind in ("probe", "synchronous")
        b = 1.0 if idle else p.decode_batch
        if not (b > 0) or math.isnan(b):
            continue
        rho = 0.0 if idle else s.send_rate * prof.prefill_time(s.mean_input_tokens)
        if rho >= 0.6:
            continue  # mostly prefilling: the decode step is poorly observed
        ctx = b * (s.mean_input_tokens + s.mean_output_tokens / 2.0)
        fit.decode_points.append(DecodePoint(batch=b, context=ctx, seconds=s.tpot.mean * (1 - rho)))
    if len(fit.decode_points) >= 3:
        prof = fit_profile(prof, decode=fit.decode_points, source="bench")
    else:
        fit.warnings.append("not enough streamed runs to fit the decode step")
    fit.profile, fit.prefill_points = prof, pre
    return fit


def serial_batch(points: Sequence[SweepPoint]) -> tuple[float, int] | None:
    """(largest decode batch, client concurrency) when the closed-loop runs kept several
    requests in flight but the engine decoded about one at a time — it queues requests
    instead of batching them (llama-cpp-python's server does). None otherwise."""
    loaded = [p for p in points if p.kind in ("throughput", "context") and p.summary.completed]
    conc = max((p.summary.max_concurrency for p in loaded), default=0)
    seen = [
        b
        for p in loaded
        for b in (p.observed_batch, p.decode_batch)
        if b is not None and math.isfinite(b)
    ]
    if conc >= 2 and seen and max(seen) < SERIAL_BATCH:
        return max(seen), conc
    return None


def _serial_fit(base: Profile, points: Sequence[SweepPoint], batch: float, conc: int) -> Fit:
    """No profile for an engine that does not batch: say what was measured instead."""
    fit = Fit(base, "none", withheld=True)
    fit.prefill_points = [PrefillPoint(tokens=n, seconds=t) for n, t, _ in _probes(points)]
    sync = next((p.summary for p in points if p.kind == "synchronous"), None)
    at1 = ""
    if sync is not None and sync.ttft.count:
        at1 = (
            f"; one request at a time it measured TTFT p50 {sync.ttft.p50 * 1e3:.1f} ms and "
            f"TPOT {sync.tpot.mean * 1e3:.2f} ms (client overhead included)"
        )
    fit.warnings.append(
        f"the endpoint decoded one sequence at a time although the bench kept {conc} requests "
        f"in flight (decode batch ≤ {batch:.2f}): it queues requests instead of batching them, "
        "so the decode step's per-sequence term and the batched capacity a profile implies "
        f"cannot be measured — no profile is fitted or written{at1}. Use the sweep's max rate "
        "at the SLO for this endpoint instead."
    )
    return fit


def _no_usage(points: Sequence[SweepPoint]) -> list[str]:
    if any(p.usage_share == 0.0 for p in points):
        return [
            "the endpoint's streams carry no usage (it ignores stream_options.include_usage): "
            "output tokens were counted as content chunks, so TPOT, ITL and the engine "
            "iterations assume one token per chunk"
        ]
    return []


def fit_from_sweep(base: Profile, points: Sequence[SweepPoint], quadratic: bool = False) -> Fit:
    """Fit `base`'s timing to a sweep's runs (module doc); KV capacity and engine kept.

    An engine that never batched (`serial_batch`) gets no profile (`withheld`), only a
    warning with what was measured."""
    iters = [it for p in points for it in p.iterations]
    serial = serial_batch(points)
    if serial is not None:
        withheld = _serial_fit(base, points, *serial)
        withheld.iterations = len(iters)
        withheld.warnings.extend(_no_usage(points))
        return withheld
    fit = _fit_from_iterations(base, points, iters, quadratic)
    if fit is None:
        fit = _fit_from_tpot(base, points, quadratic)
        fit.iterations = len(iters)
        fit.warnings.insert(
            0,
            "engine iterations not visible in the token stream (several tokens per chunk?): "
            "decode fitted from TPOT, and the client overhead stays in prefill_base_s",
        )
    fit.profile = fit.profile.model_copy(update={"source": "bench"})
    fit.warnings.extend(_other_traffic(points))
    fit.warnings.extend(_no_usage(points))
    return fit


def _other_traffic(points: Sequence[SweepPoint]) -> list[str]:
    """Warn when the server's own running count (`vllm:num_requests_running`, scraped) is
    well above the decode batch seen in the bench's streams: someone else's requests were
    in the batches, so the fitted step is charged to too few sequences."""
    for p in points:
        seen, scraped = p.observed_batch, p.scraped_batch
        if seen is not None and scraped is not None and scraped > 1.25 * seen + 2.0:
            return [
                f"the server ran {scraped:.1f} requests on average in a {p.kind} run but the "
                f"bench's streams show batches of {seen:.1f}: other traffic on the endpoint "
                "makes the fitted decode step too high per sequence"
            ]
    return []
