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

    def rate(self, offset: float) -> float:
        """Offered requests/s at `offset`: ramp up, steady, surge (smooth edges), steady."""
        base, length = self.base_rps, self.load_s
        if offset < 0 or offset >= length:
            return 0.0
        if offset < self.ramp_end * length:
            return base * (0.5 + 0.5 * offset / (self.ramp_end * length))
        surge_start_s, surge_end_s = self.surge_start * length, self.surge_end * length
        edge = max(0.04 * length, 1e-3)
        peak = base * self.surge_factor
        if surge_start_s <= offset < surge_start_s + edge:
            return base + (peak - base) * (offset - surge_start_s) / edge
        if surge_start_s + edge <= offset < surge_end_s - edge:
            return peak
        if surge_end_s - edge <= offset < surge_end_s:
            return peak - (peak - base) * (offset - (surge_end_s - edge)) / edge
        return base

    def phases(self) -> list[Phase]:
        """The story's phases in order (they may overlap: the outage starts inside the surge)."""
        length = self.load_s
        return [
            Phase("ramp-up", 0.0, self.ramp_end * length),
            Phase("steady", self.ramp_end * length, self.surge_start * length),
            Phase("surge", self.surge_start * length, self.surge_end * length),
            Phase(f"{self.outage_provider or 'provider'} down", self.outage_at, self.recover_at),
            Phase("recovery", self.recover_at, length),
        ]

    def phase_at(self, offset: float) -> str:
        """A short label of what is happening at `offset`."""
        if offset >= self.load_s:
            return "draining"
        labels = [phase.name for phase in self.phases() if phase.start <= offset < phase.end]
        if not labels:
            return "starting"
        return " + ".join(labels)

    def expected_requests(self, step: float = 0.1) -> float:
        """Integral of the rate over the load window (for progress estimates)."""
        count = int(self.load_s / step)
        return sum(self.rate(index * step) * step for index in range(count))
