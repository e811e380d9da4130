"""The load generator: open loop (constant, Poisson, gamma, or a rate that varies with time)
or closed loop (fixed concurrency), bounded by a duration or a request count, with warm-up.

Library entry point: :func:`run_load` (async). One process, one event loop (uvloop when
available), one aiohttp session with a large connection pool; the generator records how
late it sent each request against its schedule and warns when that lag grows.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import numpy as np

from skyfleet.bench.arrivals import Process, arrivals_for, unit_gaps
from skyfleet.bench.client import send, send_fast
from skyfleet.bench.fastclient import FastHttp
from skyfleet.bench.metrics import RequestResult, Slo, Summary, summarize
from skyfleet.bench.workload import RequestSource, build_body
from skyfleet.errors import SkyfleetError

Api = Literal["chat", "completions"]


@dataclass(frozen=True)
class Target:
    """Where to send: an OpenAI-compatible base URL (with or without `/v1`) and how."""

    url: str
    model: str | None = None
    api_key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    api: Api = "chat"
    stream: bool = True
    timeout_s: float = 120.0
    ignore_eos: bool = True

    @property
    def root(self) -> str:
        u = self.url.rstrip("/")
        return u[: -len("/v1")] if u.endswith("/v1") else u

    @property
    def endpoint(self) -> str:
        return self.root + ("/v1/chat/completions" if self.api == "chat" else "/v1/completions")

    def base_headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        h.update(self.headers)
        return h

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.root,
            "endpoint": self.endpoint,
            "model": self.model,
            "api": self.api,
            "stream": self.stream,
            "timeout_s": self.timeout_s,
            "extra_headers": sorted(self.headers),
            "api_key_set": bool(self.api_key),
        }


RateFn = Callable[[float], float]


@dataclass(frozen=True)
class Load:
    """The load shape.

    - `rate` a number: open loop at that mean rate (req/s) with `process` arrivals;
      a function of the offset in seconds: open loop with a time-varying rate.
    - `rate` None and `concurrency` N: closed loop with N requests always in flight.
    - `rate` None and no concurrency: every request at once (needs `num_requests`).
    - With a rate, `concurrency` caps the requests in flight.
    The run stops after `num_requests` measured requests or `duration_s` measured seconds;
    warm-up (`warmup_s` seconds, or the first `warmup_requests`) comes first, not measured.
    Cool-down (`cooldown_requests` more, or `cooldown_s` more seconds) keeps the load on
    while the last measured requests finish, so they do not see the engine drain (GuideLLM's
    cool-down); not measured either. `exact_rate` (a fixed rate and a request count)
    rescales the seeded gaps so that the run's mean rate is exactly `rate`: a Poisson
    process conditioned on its count, so a short run measures the rate asked, not ±1/√n.
    """

    rate: float | RateFn | None = None
    process: Process = "poisson"
    burstiness: float = 1.0
    concurrency: int | None = None
    duration_s: float | None = None
    num_requests: int | None = None
    warmup_s: float = 0.0
    warmup_requests: int = 0
    cooldown_s: float = 0.0
    cooldown_requests: int = 0
    exact_rate: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.duration_s is None and self.num_requests is None:
            raise SkyfleetError("give a duration or a request count for the run")
        if self.rate is None and self.concurrency is None and self.num_requests is None:
            raise SkyfleetError("sending everything at once needs a request count")
        if isinstance(self.rate, int | float) and not self.rate > 0:
            raise SkyfleetError(f"rate must be > 0 req/s, got {self.rate}")
        if self.concurrency is not None and self.concurrency < 1:
            raise SkyfleetError(f"concurrency must be ≥ 1, got {self.concurrency}")
        if min(self.warmup_s, self.warmup_requests, self.cooldown_s, self.cooldown_requests) < 0:
            raise SkyfleetError("warm-up and cool-down must be ≥ 0")
        if self.burstiness <= 0:
            raise SkyfleetError(f"burstiness must be > 0, got {self.burstiness}")

    @property
    def kind(self) -> str:
        if self.rate is None:
            return "concurrency" if self.concurrency else "burst"
        return "rate-function" if callable(self.rate) else self.process

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rate": self.rate if isinstance(self.rate, int | float) else None,
            "process": self.process,
            "burstiness": self.burstiness,
            "concurrency": self.concurrency,
            "duration_s": self.duration_s,
            "num_requests": self.num_requests,
            "warmup_s": self.warmup_s,
            "warmup_requests": self.warmup_requests,
            "cooldown_s": self.cooldown_s,
            "cooldown_requests": self.cooldown_requests,
            "exact_rate": self.exact_rate,
            "seed": self.seed,
        }


@dataclass
class LiveStats:
    """Counters updated as the run goes (read them from a progress display or a callback)."""

    phase: str = "starting"
    started: float = 0.0
    sent: int = 0
    completed: int = 0
    failed: int = 0
    in_flight: int = 0
    output_tokens: int = 0
    last_lag_s: float = 0.0
    max_lag_s: float = 0.0
    ttft_ewma_s: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    planned_total: int | None = None
    planned_duration_s: float | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started if self.started else 0.0

    def record(self, r: RequestResult) -> None:
        self.in_flight -= 1
        if r.ok:
            self.completed += 1
            self.output_tokens += r.output_tokens
            if r.ttft is not None:
                a = 0.05
                self.ttft_ewma_s = (
                    r.ttft if self.completed == 1 else (1 - a) * self.ttft_ewma_s + a * r.ttft
                )
        else:
            self.failed += 1
            self.errors[r.error or "unknown"] += 1


@dataclass
class RunResult:
    """Everything one run produced: per-request results, settings, warnings."""

    results: list[RequestResult]
    settings: dict[str, Any]
    interrupted: bool = False
    incomplete: int = 0
    warnings: list[str] = field(default_factory=list)
    batch_samples: list[tuple[float, float, float]] = field(default_factory=list)
    measure_start: float = 0.0

    def summary(
        self, slo: Slo = Slo(), label: str | None = None, time_scale: float = 1.0
    ) -> Summary:
        """Figures of the measured requests (in the endpoint's time when `time_scale` ≠ 1)."""
        return summarize(self.results, slo, label, time_scale)

    def labels(self) -> list[str]:
        return sorted({r.label for r in self.results})

    def measured_window(self) -> tuple[float, float] | None:
        """First measured send → last measured completion (s from the run's start)."""
        rs = [r for r in self.results if r.measured and r.ok]
        return (min(r.sent for r in rs), max(r.done for r in rs)) if rs else None

    def mean_batch(self) -> float | None:
        """Time-averaged `vllm:num_requests_running` over the measured window, if scraped."""
        window = self.measured_window()
        if window is None or not self.batch_samples:
            return None
        lo, hi = window
        xs = [run for t, run, _ in self.batch_samples if lo <= t <= hi]
        return float(np.mean(xs)) if len(xs) >= 3 else None


def raise_fd_limit() -> int:
    """Raise the open-files soft limit to the hard limit (many streams need many sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 16
    if soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            return want
    return soft


def new_session(max_connections: int = 0) -> aiohttp.ClientSession:
    """An aiohttp session for load: no pool limit (0) unless given, keep-alive, no cookies."""
    conn = aiohttp.TCPConnector(
        limit=max_connections, limit_per_host=0, ttl_dns_cache=300, enable_cleanup_closed=False
    )
    return aiohttp.ClientSession(
        connector=conn,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
        read_bufsize=1 << 16,
    )


def _schedule(load: Load, total: int | None, until: float) -> Iterator[float]:
    """Planned send offsets for an open-loop or burst run."""
    if load.rate is None:
        for _ in range(total or 0):
            yield 0.0
        return
    rate = load.rate
    rng = np.random.default_rng(load.seed)
    if load.exact_rate and total and not callable(rate):
        gaps = unit_gaps(load.process, total, rng, load.burstiness)
        times = np.cumsum(gaps * (total / gaps.sum())) / rate
        yield from (float(t) for t in times if t < until)
        return
    fn: RateFn = rate if callable(rate) else (lambda _t: float(rate))
    it = arrivals_for(fn, load.process, burstiness=load.burstiness, seed=rng, until=until)
    for n, t in enumerate(it):
        if total is not None and n >= total:
            return
        yield t


async def _scrape_batch(
    session: aiohttp.ClientSession,
    url: str,
    headers: Mapping[str, str],
    t0: float,
    out: list[tuple[float, float, float]],
    every_s: float,
) -> None:
    """Sample `vllm:num_requests_running`/`waiting` from /metrics until cancelled."""
    timeout = aiohttp.ClientTimeout(total=2.0)
    while True:
        try:
            async with session.get(url, headers=headers, timeout=timeout) as r:
                if r.status != 200:
                    return
                text = await r.text()
        except (TimeoutError, aiohttp.ClientError):
            return
        run = wait = 0.0
        seen = False
        for line in text.splitlines():
            if line.startswith("vllm:num_requests_running"):
                run += float(line.rsplit(" ", 1)[1])
                seen = True
            elif line.startswith("vllm:num_requests_waiting"):
                wait += float(line.rsplit(" ", 1)[1])
        if not seen:
            return
        out.append((time.perf_counter() - t0, run, wait))
        await asyncio.sleep(every_s)


def lag_warning(results: list[RequestResult]) -> str | None:
    """A warning when the generator fell behind its own schedule (it saturated itself)."""
    rs = sorted(
        (r for r in results if math.isfinite(r.planned) and r.planned > 0), key=lambda r: r.planned
    )
    if len(rs) < 30:
        return None
    lags = np.array([r.lag for r in rs])
    third = len(lags) // 3
    first, last = float(lags[:third].mean()), float(lags[-third:].mean())
    p99 = float(np.percentile(lags, 99))
    if p99 > 0.025 or (last - first > 0.005 and last > 3 * max(first, 1e-4)):
        return (
            f"the load generator fell behind its schedule (send lag p99 {p99 * 1e3:.1f} ms, "
            f"mean {first * 1e3:.1f} ms → {last * 1e3:.1f} ms from first to last third): it is "
            "saturating itself, so the offered load is lower than asked; use fewer streams or "
            "spread the load over several processes"
        )
    return None


async def run_load(
    target: Target,
    source: RequestSource,
    load: Load,
    *,
    live: LiveStats | None = None,
    on_result: Callable[[RequestResult], None] | None = None,
    stop: asyncio.Event | None = None,
    session: aiohttp.ClientSession | None = None,
    scrape_metrics: bool = True,
    scrape_every_s: float = 0.05,
    fast_path: bool = True,
) -> RunResult:
    """Run one load against `target` and return every request's result.

    `target.model` must be set (see :func:`skyfleet.bench.checks.preflight`). Setting
    `stop` ends the run early: no new sends, in-flight requests are cancelled and counted as
    incomplete, and the result is marked `interrupted`. Never raises for server failures:
    they are results with an error kind. Non-streaming requests to `http://` go over a
    raw keep-alive HTTP/1.1 client (`fast_path`), streaming ones over aiohttp.
    """
    if not target.model:
        raise SkyfleetError("no model set for the target (run preflight or pass --model)")
    raise_fd_limit()
    live = live or LiveStats()
    stop = stop or asyncio.Event()
    own = session is None
    sess = session or new_session()
    timeout = aiohttp.ClientTimeout(total=target.timeout_s)
    base = target.base_headers()
    endpoint = target.endpoint
    use_fast = fast_path and not target.stream and endpoint.startswith("http://")
    fast = FastHttp(target.root) if use_fast else None
    path = endpoint[len(target.root) :]
    warm_n = load.warmup_requests
    warm_s = load.warmup_s
    cool_n, cool_s = load.cooldown_requests, load.cooldown_s
    total = None if load.num_requests is None else load.num_requests + warm_n + cool_n
    cool_from = math.inf if load.duration_s is None else warm_s + load.duration_s
    until = cool_from + cool_s
    results: list[RequestResult] = []
    tasks: set[asyncio.Task[RequestResult]] = set()
    batch: list[tuple[float, float, float]] = []
    sem = (
        asyncio.Semaphore(load.concurrency) if load.concurrency and load.rate is not None else None
    )
    live.planned_total, live.planned_duration_s = total, None if math.isinf(until) else until
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    live.started = t0
    live.phase = "warm-up" if (warm_n or warm_s) else "measuring"

    async def one(i: int, planned: float) -> RequestResult:
        spec = source.get(i)
        body = build_body(
            spec,
            model=target.model or "",
            api=target.api,
            stream=target.stream,
            ignore_eos=target.ignore_eos,
        )
        hdr = base if not spec.headers else {**base, **spec.headers}
        res = RequestResult(i, spec.label, planned, 0.0, input_tokens=spec.input_tokens)
        if fast is not None:
            await send_fast(
                fast, path, json.dumps(body).encode(), hdr, res, t0=t0, timeout_s=target.timeout_s
            )
        else:
            await send(
                sess,
                endpoint,
                json.dumps(body).encode(),
                hdr,
                res,
                stream=target.stream,
                t0=t0,
                timeout=timeout,
            )
        res.warmup = i < warm_n or res.sent < warm_s
        res.cooldown = (total is not None and i >= total - cool_n) or res.sent >= cool_from
        if live.phase == "warm-up" and not res.warmup:
            live.phase = "measuring"
        return res

    def finished(task: asyncio.Task[RequestResult]) -> None:
        tasks.discard(task)
        if sem is not None:
            sem.release()
        if task.cancelled():
            live.in_flight -= 1
            return
        r = task.result()
        results.append(r)
        live.record(r)
        if on_result is not None:
            on_result(r)

    def launch(i: int, planned: float) -> asyncio.Task[RequestResult]:
        live.sent += 1
        live.in_flight += 1
        task = loop.create_task(one(i, planned))
        tasks.add(task)
        task.add_done_callback(finished)
        return task

    counter = itertools.count()

    async def worker() -> None:
        """Closed loop: send the next request as soon as the previous one ends."""
        while not stop.is_set():
            i = next(counter)
            if (total is not None and i >= total) or time.perf_counter() - t0 >= until:
                return
            try:
                await launch(i, math.nan)
            except asyncio.CancelledError:
                return

    async def open_loop() -> None:
        for i, planned in enumerate(_schedule(load, total, until)):
            delay = planned - (time.perf_counter() - t0)
            if delay > 0:
                await asyncio.wait({stopper}, timeout=delay)
            if stop.is_set():
                return
            if sem is not None:
                await sem.acquire()
            launch(i, planned)
            lag = time.perf_counter() - t0 - planned
            live.last_lag_s = lag
            live.max_lag_s = max(live.max_lag_s, lag)
            await asyncio.sleep(0)

    scraper = None
    if scrape_metrics:
        scraper = loop.create_task(
            _scrape_batch(sess, target.root + "/metrics", base, t0, batch, scrape_every_s)
        )
    stopper = loop.create_task(stop.wait())
    drivers: list[asyncio.Task[None]] = []
    try:
        if load.rate is None and load.concurrency:
            drivers = [loop.create_task(worker()) for _ in range(load.concurrency)]
        else:
            drivers = [loop.create_task(open_loop())]
        pending: set[asyncio.Future[Any]] = set(drivers)
        while pending and not stop.is_set():
            _, pending = await asyncio.wait(pending | {stopper}, return_when="FIRST_COMPLETED")
            pending.discard(stopper)
        live.phase = "draining"
        while tasks and not stop.is_set():
            await asyncio.wait(set(tasks) | {stopper}, return_when="FIRST_COMPLETED")
    finally:
        incomplete = len(tasks)
        for t in [*drivers, *tasks]:
            t.cancel()
        await asyncio.gather(*drivers, *tasks, return_exceptions=True)
        stopper.cancel()
        if scraper is not None:
            scraper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scraper
        if own:
            await sess.close()
        if fast is not None:
            fast.close()
        live.phase = "done"
    results.sort(key=lambda r: r.index)
    out = RunResult(
        results,
        {"target": target.describe(), "load": load.describe(), "requests": source.description},
        interrupted=stop.is_set(),
        incomplete=incomplete,
        batch_samples=batch,
        measure_start=warm_s,
    )
    if w := lag_warning(results):
        out.warnings.append(w)
    return out
