"""What the demo's clients saw: per-priority outcomes, TTFT percentiles and time series (pure)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from skyfleet.bench.metrics import RequestResult
from skyfleet.dashboard.model import PRIORITIES

SHED_ERRORS = frozenset({"http_429", "http_503"})


def _pct(values: list[float], percentile: float) -> float | None:
    return float(np.percentile(values, percentile)) if values else None


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

    def ttft_ms(self, percentile: float) -> float | None:
        seconds = _pct(self.ttfts, percentile)
        return None if seconds is None else 1000.0 * seconds

    def record(self, result: RequestResult) -> None:
        """Count one finished request: ok (with its TTFT), shed (429/503) or failed."""
        self.sent += 1
        if result.ok:
            self.ok += 1
            if result.ttft is not None:
                self.ttfts.append(result.ttft)
        elif result.error in SHED_ERRORS:
            self.shed += 1
        else:
            self.failed += 1


class ClientLog:
    """Accumulates request results as they finish; offsets are seconds from the load start."""

    def __init__(self) -> None:
        self.results: list[RequestResult] = []
        self.classes = {priority: ClassStats(priority) for priority in PRIORITIES}

    def add(self, result: RequestResult) -> None:
        self.results.append(result)
        label = result.label or "standard"
        self.classes.setdefault(label, ClassStats(label)).record(result)

    def extend(self, results: Iterable[RequestResult]) -> None:
        for result in results:
            self.add(result)

    # -- summaries ----------------------------------------------------------------------
    @property
    def sent(self) -> int:
        return sum(stats.sent for stats in self.classes.values())

    @property
    def ok(self) -> int:
        return sum(stats.ok for stats in self.classes.values())

    def ttft_ms(self, percentile: float) -> float | None:
        ttfts = [ttft for stats in self.classes.values() for ttft in stats.ttfts]
        seconds = _pct(ttfts, percentile)
        return None if seconds is None else 1000.0 * seconds

    def window(self, start: float, end: float) -> dict[str, ClassStats]:
        """Per-priority outcomes of the requests sent in [start, end)."""
        out = {priority: ClassStats(priority) for priority in PRIORITIES}
        for result in self.results:
            if start <= result.sent < end:
                out.setdefault(result.label, ClassStats(result.label)).record(result)
        return out

    def errors(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for result in self.results:
            if not result.ok:
                error = result.error or "unknown"
                out[error] = out.get(error, 0) + 1
        return out

    def per_second(self, length_s: float, step: float = 1.0) -> dict[str, list[float]]:
        """Series by send time: ok/s and not-ok/s per priority, TTFT p50 and p99 (ms)."""
        bins = max(1, math.ceil(length_s / step))
        out: dict[str, list[float]] = {"t": [index * step for index in range(bins)]}
        for priority in PRIORITIES:
            out[f"ok:{priority}"] = [0.0] * bins
            out[f"bad:{priority}"] = [0.0] * bins
        buckets: list[list[float]] = [[] for _ in range(bins)]
        for result in self.results:
            index = int(result.sent // step)
            if not 0 <= index < bins:
                continue
            key = f"ok:{result.label}" if result.ok else f"bad:{result.label}"
            if key in out:
                out[key][index] += 1.0 / step
            if result.ok and result.ttft is not None:
                buckets[index].append(1000.0 * result.ttft)
        out["ttft_p50"] = [
            float(np.percentile(bucket, 50)) if bucket else math.nan for bucket in buckets
        ]
        out["ttft_p99"] = [
            float(np.percentile(bucket, 99)) if bucket else math.nan for bucket in buckets
        ]
        return out
