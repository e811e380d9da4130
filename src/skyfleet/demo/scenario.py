"""The demo's story in time: a demand curve with a surge and one provider's outage (pure).

Times are seconds from the start of the load. Everything scales with the load's length, so
`--duration 30` tells the same story as the default three minutes, faster.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Phase:
    """A named stretch of the story: [start, end) in seconds from the start of the load."""

    name: str
    start: float
    end: float


@dataclass(frozen=True)
class Scenario:
    """Demand (req/s) over the load window, a surge, and one provider down then back."""

    load_s: float
    base_rps: float
    surge_factor: float = 2.0
    outage_provider: str = ""
    # fractions of load_s
    ramp_end: float = 0.12
    surge_start: float = 0.30
    surge_end: float = 0.55
    outage_start: float = 0.42
    outage_end: float = 0.68

    @property
    def outage_at(self) -> float:
        return self.outage_start * self.load_s

    @property
    def recover_at(self) -> float:
        return self.outage_end * self.load_s

    def rate(self, t: float) -> float:
        """Offered requests/s at offset `t`: ramp up, steady, surge (smooth edges), steady."""
        b, L = self.base_rps, self.load_s
        if t < 0 or t >= L:
            return 0.0
        if t < self.ramp_end * L:
            return b * (0.5 + 0.5 * t / (self.ramp_end * L))
        s0, s1 = self.surge_start * L, self.surge_end * L
        edge = max(0.04 * L, 1e-3)
        peak = b * self.surge_factor
        if s0 <= t < s0 + edge:
            return b + (peak - b) * (t - s0) / edge
        if s0 + edge <= t < s1 - edge:
            return peak
        if s1 - edge <= t < s1:
            return peak - (peak - b) * (t - (s1 - edge)) / edge
        return b

    def phases(self) -> list[Phase]:
        """The story's phases in order (they may overlap: the outage starts inside the surge)."""
        L = self.load_s
        return [
            Phase("ramp-up", 0.0, self.ramp_end * L),
            Phase("steady", self.ramp_end * L, self.surge_start * L),
            Phase("surge", self.surge_start * L, self.surge_end * L),
            Phase(f"{self.outage_provider or 'provider'} down", self.outage_at, self.recover_at),
            Phase("recovery", self.recover_at, L),
        ]

    def phase_at(self, t: float) -> str:
        """A short label of what is happening at offset `t`."""
        if t >= self.load_s:
            return "draining"
        labels = [p.name for p in self.phases() if p.start <= t < p.end]
        if not labels:
            return "starting"
        return " + ".join(labels)

    def expected_requests(self, step: float = 0.1) -> float:
        """Integral of the rate over the load window (for progress estimates)."""
        n = int(self.load_s / step)
        return sum(self.rate(i * step) * step for i in range(n))
