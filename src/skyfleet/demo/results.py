"""What the demo's clients saw: per-priority outcomes, TTFT percentiles and time series (pure)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from skyfleet.bench.metrics import RequestResult
from skyfleet.dashboard.model import PRIORITIES

SHED_ERRORS = frozenset({"http_429", "http_503"})


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


@dataclass
class ClassStats:
    """Outcomes of one priority class."""

    priority: str
    sent: int = 0
    ok: int = 0
    shed: int = 0
    failed: int = 0
    ttfts: list[float] = field(default_factory=list)

    @property
    def success_rate(self) -> float | None:
        return self.ok / self.sent if self.sent else None

    def ttft_ms(self, q: float) -> float | None:
        v = _pct(self.ttfts, q)
        return None if v is None else 1000.0 * v

    def record(self, r: RequestResult) -> None:
        """Count one finished request: ok (with its TTFT), shed (429/503) or failed."""
        self.sent += 1
        if r.ok:
            self.ok += 1
            if r.ttft is not None:
                self.ttfts.append(r.ttft)
        elif r.error in SHED_ERRORS:
            self.shed += 1
        else:
            self.failed += 1


class ClientLog:
    """Accumulates request results as they finish; offsets are seconds from the load start."""

    def __init__(self) -> None:
        self.results: list[RequestResult] = []
        self.classes = {p: ClassStats(p) for p in PRIORITIES}

    def add(self, r: RequestResult) -> None:
        self.results.append(r)
        label = r.label or "standard"
        self.classes.setdefault(label, ClassStats(label)).record(r)

    def extend(self, rs: Iterable[RequestResult]) -> None:
        for r in rs:
            self.add(r)

    # -- summaries ----------------------------------------------------------------------
    @property
    def sent(self) -> int:
        return sum(c.sent for c in self.classes.values())

    @property
    def ok(self) -> int:
        return sum(c.ok for c in self.classes.values())

    def ttft_ms(self, q: float) -> float | None:
        v = _pct([t for c in self.classes.values() for t in c.ttfts], q)
        return None if v is None else 1000.0 * v

    def window(self, start: float, end: float) -> dict[str, ClassStats]:
        """Per-priority outcomes of the requests sent in [start, end)."""
        out = {p: ClassStats(p) for p in PRIORITIES}
        for r in self.results:
            if start <= r.sent < end:
                out.setdefault(r.label, ClassStats(r.label)).record(r)
        return out

    def errors(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            if not r.ok:
                out[r.error or "unknown"] = out.get(r.error or "unknown", 0) + 1
        return out

    def per_second(self, length_s: float, step: float = 1.0) -> dict[str, list[float]]:
        """Series by send time: ok/s and not-ok/s per priority, TTFT p50 and p99 (ms)."""
        n = max(1, math.ceil(length_s / step))
        out: dict[str, list[float]] = {"t": [i * step for i in range(n)]}
        for p in PRIORITIES:
            out[f"ok:{p}"] = [0.0] * n
            out[f"bad:{p}"] = [0.0] * n
        buckets: list[list[float]] = [[] for _ in range(n)]
        for r in self.results:
            i = int(r.sent // step)
            if not 0 <= i < n:
                continue
            key = f"ok:{r.label}" if r.ok else f"bad:{r.label}"
            if key in out:
                out[key][i] += 1.0 / step
            if r.ok and r.ttft is not None:
                buckets[i].append(1000.0 * r.ttft)
        out["ttft_p50"] = [float(np.percentile(b, 50)) if b else math.nan for b in buckets]
        out["ttft_p99"] = [float(np.percentile(b, 99)) if b else math.nan for b in buckets]
        return out
