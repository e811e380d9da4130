"""When to hedge: a second attempt once TTFT passes a percentile of recent TTFTs.

After "The Tail at Scale" (Dean & Barroso, 2013): defer the hedge until the first attempt has
waited longer than the class's p95, so only the slow tail is duplicated (≈5 % extra load),
and cap the extra load with a budget (hedges ≤ ``budget_fraction`` × requests over a sliding
window, like gRPC's hedging throttle). The loser is cancelled by the caller. Off by default.
Pure: the clock and samples are passed in.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class HedgeSettings:
    """Hedging knobs, from ``overload.hedging`` (`policy.settings.hedge_settings`)."""

    enabled: bool
    percentile: float
    budget_fraction: float
    min_samples: int
    min_delay_s: float
    history: int = 512
    window_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.percentile < 100:
            raise ValueError("hedging percentile must be in (0, 100)")
        if not 0 <= self.budget_fraction <= 1:
            raise ValueError("hedging budget_fraction must be in [0, 1]")
        if self.min_samples < 1 or self.history < self.min_samples or self.window_s <= 0:
            raise ValueError("need 1 <= min_samples <= history and window_s > 0")


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty list."""
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class HedgePolicy:
    """Hedging decisions for one traffic class (e.g. one model)."""

    def __init__(self, settings: HedgeSettings) -> None:
        self.settings = settings
        self._ttfts: deque[float] = deque(maxlen=self.settings.history)
        self._cached: float | None = None
        self._since_sort = 0
        self._buckets: deque[list[float]] = deque()  # [second, requests, hedges]
        self.hedges_sent = 0

    def record_ttft(self, ttft_s: float) -> None:
        """Add a time-to-first-token sample (what the client saw)."""
        self._ttfts.append(ttft_s)
        self._since_sort += 1

    def delay_s(self) -> float | None:
        """How long to wait before hedging; None = do not hedge (off or too few samples)."""
        settings = self.settings
        if not settings.enabled or len(self._ttfts) < settings.min_samples:
            return None
        if self._cached is None or self._since_sort >= max(1, len(self._ttfts) // 16):
            self._cached = percentile(sorted(self._ttfts), settings.percentile)
            self._since_sort = 0
        return max(settings.min_delay_s, self._cached)

    def _bucket(self, now: float) -> list[float]:
        second = math.floor(now)
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([float(second), 0.0, 0.0])
        while self._buckets and self._buckets[0][0] <= now - self.settings.window_s:
            self._buckets.popleft()
        return self._buckets[-1]

    def record_request(self, now: float) -> None:
        """Count a primary request (the base of the hedge budget)."""
        self._bucket(now)[1] += 1

    def try_hedge(self, now: float) -> bool:
        """Whether a hedge may be sent now (within budget); counts it if so."""
        if not self.settings.enabled:
            return False
        current = self._bucket(now)
        requests = sum(bucket[1] for bucket in self._buckets)
        hedges = sum(bucket[2] for bucket in self._buckets)
        if hedges + 1 > self.settings.budget_fraction * requests:
            return False
        current[2] += 1
        self.hedges_sent += 1
        return True

    def extra_load(self, now: float) -> float:
        """Hedges ÷ requests over the window (the extra load hedging adds)."""
        self._bucket(now)
        requests = sum(bucket[1] for bucket in self._buckets)
        return sum(bucket[2] for bucket in self._buckets) / requests if requests else 0.0
