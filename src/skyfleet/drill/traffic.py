"""Load for a drill: the project's load generator (`bench.loadgen.run_load`), one open-loop
Poisson run of non-streaming requests and one of streams side by side, while the drill's
fault events fire at their times; every request becomes a `Sample` on one clock."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skyfleet.bench.loadgen import LiveStats, Load, Target, run_load
from skyfleet.bench.metrics import RequestResult
from skyfleet.bench.workload import SyntheticRequests

Event = tuple[float, str, Callable[[], object]]  # (at s, name, blocking action run in a thread)


@dataclass(frozen=True)
class DrillLoad:
    """Each kind (non-streaming, streaming) at `rate` req/s, Poisson, for `duration_s`."""

    rate: float
    duration_s: float
    input_tokens: int = 64
    output_tokens: int = 16
    streams: bool = True
    timeout_s: float = 30.0
    seed: int = 0

    def describe(self) -> str:
        kinds = "non-streaming + streaming" if self.streams else "non-streaming"
        return (
            f"{self.rate:g} req/s each of {kinds} (Poisson), {self.input_tokens}→"
            f"{self.output_tokens} tokens, {self.duration_s:g} s"
        )


@dataclass(slots=True)
class Sample:
    """One request of the drill's load (times in seconds from the drill's start)."""

    kind: str  # "json" | "stream"
    sent: float
    done: float
    ok: bool
    error: str | None
    status: int
    latency: float | None  # non-streaming: end to end; streams: time to first token
    served_by: str | None
    attempts: int
    request_id: str | None

    @property
    def cut(self) -> bool:
        """A stream that started (200) and did not end cleanly."""
        return self.kind == "stream" and self.status == 200 and not self.ok


@dataclass
class Traffic:
    """What a drill's load saw, and when its events happened."""

    samples: list[Sample]
    marks: dict[str, float] = field(default_factory=dict)  # event name → when it was done
    fired: dict[str, float] = field(default_factory=dict)  # event name → when it started
    incomplete: int = 0

    def of(self, kind: str) -> list[Sample]:
        return [s for s in self.samples if s.kind == kind]

    def failures(self) -> Counter[str]:
        """Failed requests by kind and cause (`stream:incomplete_stream`, `json:http_502`)."""
        return Counter(f"{s.kind}:{s.error}" for s in self.samples if not s.ok)

    def p99_ms(self, kind: str, lo: float, hi: float) -> float | None:
        """p99 latency (ms) of the successful `kind` requests sent in [lo, hi)."""
        xs = [s.latency for s in self.samples if s.kind == kind and s.ok and lo <= s.sent < hi]
        clean = [x for x in xs if x is not None]
        return float(np.percentile(clean, 99)) * 1e3 if len(clean) >= 5 else None


def _sample(kind: str, r: RequestResult, offset: float) -> Sample:
    latency = r.ttft if kind == "stream" else r.e2e
    return Sample(
        kind,
        r.sent + offset,
        r.done + offset,
        r.ok,
        r.error,
        r.status,
        latency,
        r.served_by,
        r.attempts,
        r.request_id,
    )


async def drive(
    url: str, api_key: str | None, load: DrillLoad, events: Sequence[Event] = ()
) -> Traffic:
    """Run `load` against the gateway at `url` while `events` fire; wait for every request."""
    t0 = time.perf_counter()
    traffic = Traffic([])

    async def fire(at: float, name: str, action: Callable[[], object]) -> None:
        await asyncio.sleep(max(0.0, t0 + at - time.perf_counter()))
        traffic.fired[name] = time.perf_counter() - t0
        await asyncio.to_thread(action)
        traffic.marks[name] = time.perf_counter() - t0

    async def one(kind: str, seed: int) -> tuple[str, Any, LiveStats]:
        target = Target(
            url,
            model="chat",
            api_key=api_key,
            stream=kind == "stream",
            timeout_s=load.timeout_s,
        )
        source = SyntheticRequests(load.input_tokens, load.output_tokens, seed=seed)
        shape = Load(rate=load.rate, duration_s=load.duration_s, seed=seed)
        live = LiveStats()
        result = await run_load(target, source, shape, live=live, scrape_metrics=False)
        return kind, result, live

    kinds = ["json", "stream"] if load.streams else ["json"]
    firing = [asyncio.create_task(fire(*e)) for e in events]
    runs = await asyncio.gather(*(one(k, load.seed + i) for i, k in enumerate(kinds)))
    await asyncio.gather(*firing)
    for kind, result, live in runs:
        offset = live.started - t0
        traffic.samples += [_sample(kind, r, offset) for r in result.results]
        traffic.incomplete += result.incomplete
    traffic.samples.sort(key=lambda s: s.sent)
    return traffic
