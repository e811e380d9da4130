"""`bench sweep`: find the highest request rate that meets an SLO, then fit a Profile.

Procedure (GuideLLM's sweep, then a bisection):

1. **Probe**: synchronous requests at several prompt sizes (prefill points, and decode
   points at batch 1 with different contexts); then a **context** run, closed loop at
   `max_concurrency` with the longest probe prompt (decode at a large batch and context).
2. **Synchronous** run at the workload's sizes → r_sync.
3. **Throughput** run: closed loop at `max_concurrency` → r_max.
4. Poisson runs at rates spread evenly between r_sync and r_max, ascending, until one
   misses the SLO; then `refine` bisection steps between the last pass and the first miss.

Fitting (`skyfleet.bench.fit`): the decode step and prefill from the engine iterations
visible in every streamed run's token timestamps (`skyfleet.bench.iterations`), the
client/network overhead from the idle probes against those; TPOT-based when iterations
are not visible.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skyfleet.bench.arrivals import Process
from skyfleet.bench.fit import fit_from_sweep
from skyfleet.bench.iterations import Iteration, observe_iterations
from skyfleet.bench.loadgen import LiveStats, Load, RunResult, Target, run_load
from skyfleet.bench.metrics import Slo, Summary
from skyfleet.bench.workload import LengthDist, RequestSource, SyntheticRequests
from skyfleet.perf import DecodePoint, PrefillPoint, Profile


@dataclass
class SweepPoint:
    """One run of the sweep, summarised in the endpoint's time."""

    kind: str  # probe | synchronous | throughput | rate
    rate: float | None  # offered rate (endpoint time); None for closed-loop runs
    summary: Summary
    meets_slo: bool
    decode_batch: float
    scraped_batch: float | None
    iterations: list[Iteration] = field(default_factory=list, repr=False)
    observed_batch: float | None = None  # mean decode batch seen, over the measured window
    usage_share: float | None = None  # of streamed requests whose stream reported usage

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "offered_rate": self.rate,
            "meets_slo": self.meets_slo,
            "decode_batch_littles_law": self.decode_batch,
            "decode_batch_observed": self.observed_batch,
            "iterations_observed": len(self.iterations),
            "running_batch_scraped": self.scraped_batch,
            "stream_usage_share": self.usage_share,
            "summary": self.summary.as_dict(),
        }


@dataclass
class SweepResult:
    """All runs, the highest rate meeting the SLO, and the fitted profile (if asked)."""

    points: list[SweepPoint]
    slo: Slo
    percentile: float
    max_rate: float
    settings: dict[str, Any]
    profile: Profile | None = None
    fit_method: str | None = None
    client_overhead_s: float | None = None
    prefill_points: list[PrefillPoint] = field(default_factory=list)
    decode_points: list[DecodePoint] = field(default_factory=list)
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "slo": self.slo.as_dict(),
            "slo_percentile": self.percentile,
            "max_rate_at_slo": self.max_rate,
            "interrupted": self.interrupted,
            "warnings": self.warnings,
            "points": [p.as_dict() for p in self.points],
            "fit": {
                "method": self.fit_method,
                "client_overhead_s": self.client_overhead_s,
                "prefill_points": [p.model_dump() for p in self.prefill_points],
                "decode_points": [p.model_dump() for p in self.decode_points],
                "profile": None if self.profile is None else self.profile.model_dump(mode="json"),
            },
        }


@dataclass(frozen=True)
class SweepConfig:
    """Knobs of a sweep (counts are measured requests per run)."""

    slo: Slo
    percentile: float = 99.0
    steps: int = 5
    refine: int = 3
    sync_requests: int = 20
    requests_per_rate: int = 200
    max_concurrency: int = 64
    throughput_requests: int | None = None
    probe_sizes: tuple[float, ...] = (0.25, 1.0, 2.0, 4.0)
    probe_requests: int = 3
    process: Process = "poisson"
    warmup_requests: int = 10
    cooldown_requests: int = 10
    seed: int = 0
    time_scale: float = 1.0
    quadratic_prefill: bool = False

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "slo"}
        d["slo"] = self.slo.as_dict()
        return d


def mean_batch(
    its: list[Iteration], window: tuple[float, float] | None, time_scale: float
) -> float | None:
    """Time-weighted mean decode batch of the iterations ending inside `window` (wall s,
    as `RunResult.measured_window`), the window `vllm:num_requests_running` is averaged on."""
    if window is None:
        return None
    lo, hi = window[0] * time_scale, window[1] * time_scale
    inside = [i for i in its if lo <= i.end <= hi]
    span = sum(i.duration for i in inside)
    return sum(i.batch * i.duration for i in inside) / span if span else None


def decode_batch(s: Summary) -> float:
    """Little's law over the decode phase: arrival rate × mean(E2E − TTFT).

    The arrival rate is the achieved send rate (in a steady state it equals the departure
    rate; completed/duration would count the drain at the end of a short run)."""
    if not s.ttft.count:
        return math.nan
    return s.send_rate * max(s.e2e.mean - s.ttft.mean, 0.0)


async def sweep(
    target: Target,
    source: Callable[[int], RequestSource],
    input_len: LengthDist,
    output_len: LengthDist,
    cfg: SweepConfig,
    *,
    base: Profile | None = None,
    stop: asyncio.Event | None = None,
    on_phase: Callable[[str, LiveStats], None] | None = None,
    on_point: Callable[[SweepPoint], None] | None = None,
) -> SweepResult:
    """Run the sweep against `target` (model set); `source(seed)` makes each run's requests.

    Rates and latencies are in the endpoint's time (`cfg.time_scale`); the fitted profile
    starts from `base` (its KV capacity and engine settings are kept).
    """
    stop = stop or asyncio.Event()
    ts = cfg.time_scale
    points: list[SweepPoint] = []
    warnings: list[str] = []
    run_no = 0

    async def run(kind: str, src: RequestSource, load: Load, rate: float | None) -> SweepPoint:
        nonlocal run_no
        run_no += 1
        live = LiveStats()
        label = kind if rate is None else f"rate {rate:.3g}/s"
        if on_phase is not None:
            on_phase(label, live)
        rr: RunResult = await run_load(target, src, load, live=live, stop=stop)
        s = rr.summary(cfg.slo, time_scale=ts)
        scraped = rr.mean_batch()
        its = observe_iterations(rr.results, ts)
        streamed = [r for r in rr.results if r.ttft is not None]
        pt = SweepPoint(
            kind, rate, s, s.meets(cfg.slo, cfg.percentile), decode_batch(s), scraped, its,
            mean_batch(its, rr.measured_window(), ts),
            sum(r.usage_reported for r in streamed) / len(streamed) if streamed else None,
        )  # fmt: skip
        warnings.extend(w for w in rr.warnings if w not in warnings)
        points.append(pt)
        if on_point is not None:
            on_point(pt)
        return pt

    # 1. probes at several prompt sizes (one request at a time)
    for k in cfg.probe_sizes if base is not None else ():
        if stop.is_set():
            break
        n_in = max(1, round(input_len.mean * k))
        src = SyntheticRequests(n_in, round(output_len.mean), seed=cfg.seed + 1000 + n_in)
        await run(
            f"probe {n_in} tokens",
            src,
            Load(concurrency=1, num_requests=cfg.probe_requests, warmup_requests=1),
            None,
        )
        points[-1].kind = "probe"
    # ...and a closed loop at max concurrency with the longest probe prompt: decode steps
    # at a large batch with a long context, which separates the per-sequence and
    # per-context-token decode terms (the other runs all have the workload's prompts)
    if base is not None and cfg.probe_sizes and not stop.is_set():
        n_in = max(1, round(input_len.mean * max(cfg.probe_sizes)))
        n = cfg.max_concurrency
        await run(
            f"context {n_in} tokens",
            SyntheticRequests(n_in, round(output_len.mean), seed=cfg.seed + 2000),
            Load(concurrency=n, num_requests=2 * n, warmup_requests=n),
            None,
        )
        points[-1].kind = "context"
    # 2. synchronous, 3. throughput
    sync = None
    if not stop.is_set():
        sync = await run(
            "synchronous",
            source(cfg.seed),
            Load(concurrency=1, num_requests=cfg.sync_requests, warmup_requests=1),
            None,
        )
    thr = None
    if not stop.is_set():
        n_thr = cfg.throughput_requests or max(cfg.requests_per_rate, 3 * cfg.max_concurrency)
        thr = await run(
            "throughput",
            source(cfg.seed + 1),
            Load(
                concurrency=cfg.max_concurrency,
                num_requests=n_thr,
                warmup_requests=cfg.max_concurrency,
            ),
            None,
        )
    best = 0.0
    if sync is not None and thr is not None and not stop.is_set():
        r_sync = sync.summary.request_throughput
        r_max = max(thr.summary.request_throughput, r_sync * 1.01)
        rates = list(np.linspace(r_sync, r_max, cfg.steps + 2)[1:-1])
        lo, hi = (r_sync if sync.meets_slo else 0.0), None
        seed = cfg.seed + 10

        lifetime = sync.summary.e2e.mean if sync.summary.e2e.count else 0.0

        async def at(rate: float) -> bool:
            nonlocal seed
            seed += 1
            # warm-up and cool-down each cover at least one request lifetime at this rate
            # (rate × idle E2E), so the measured requests see the steady-state batch
            in_flight = math.ceil(rate * lifetime)
            load = Load(
                rate=rate * ts,
                process=cfg.process,
                num_requests=cfg.requests_per_rate,
                warmup_requests=max(cfg.warmup_requests, in_flight),
                cooldown_requests=max(cfg.cooldown_requests, in_flight),
                exact_rate=True,
                seed=seed,
            )
            return (await run("rate", source(seed), load, rate)).meets_slo

        for r in rates:
            if stop.is_set():
                break
            if await at(r):
                lo = r
            else:
                hi = r
                break
        if hi is None and not stop.is_set():
            if await at(r_max):  # the whole range passed: the limit lies above it
                lo = hi = r_max
                warnings.append(
                    "every rate up to the throughput run's met the SLO: the limit is above "
                    f"{r_max:.3g} req/s (raise --max-concurrency to find it)"
                )
            else:
                hi = r_max
        for _ in range(cfg.refine):
            if stop.is_set() or lo <= 0 or hi is None or lo >= hi:
                break
            mid = (lo + hi) / 2
            if await at(mid):
                lo = mid
            else:
                hi = mid
        passing = [p.rate for p in points if p.kind == "rate" and p.meets_slo and p.rate]
        best = max(passing) if passing else (r_sync if sync.meets_slo else 0.0)
        if not passing:
            warnings.append("no open-loop rate met the SLO; reporting the synchronous rate")
    result = SweepResult(
        points, cfg.slo, cfg.percentile, best,
        {"target": target.describe(), "sweep": cfg.as_dict(),
         "input_tokens": str(input_len), "output_tokens": str(output_len)},
        interrupted=stop.is_set(), warnings=warnings,
    )  # fmt: skip
    if base is not None and points:
        fit = fit_from_sweep(base, points, cfg.quadratic_prefill)
        result.profile = None if fit.withheld else fit.profile
        result.fit_method = fit.method
        result.client_overhead_s = fit.client_overhead_s
        result.prefill_points, result.decode_points = fit.prefill_points, fit.decode_points
        result.warnings.extend(fit.warnings)
    return result
