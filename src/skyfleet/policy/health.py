"""Pure passive/active health state of one endpoint (Envoy outlier detection as the model).

`consecutive_failures` failures in a row eject the endpoint for
`base_ejection_s × 2^(n−1)` (n = ejections in a row, capped at `max_ejection_s`). When the
ejection expires the endpoint is on probation: the next successful active probe brings it back.
Probes that fail `unhealthy_after_probe_failures` times in a row take a healthy endpoint out too.
An ejection another gateway replica made (shared fleet state) is adopted with
`adopt_ejection`: the same expiry and probation, as if this process had made it.
Time is passed in (monotonic seconds), so the simulator can drive it.
"""

from __future__ import annotations

from dataclasses import dataclass

from skyfleet.config import HealthConfig


@dataclass(slots=True)
class EndpointHealth:
    """Health bookkeeping for one endpoint."""

    consecutive_failures: int = 0
    ejections_in_a_row: int = 0
    ejected_until: float | None = None  # set while ejected or on probation
    probe_failures: int = 0
    probe_down: bool = False
    last_recovered: float = 0.0
    total_ejections: int = 0

    def routable(self, now: float) -> bool:
        """Whether traffic may be sent to this endpoint now."""
        return self.ejected_until is None and not self.probe_down

    def on_probation(self, now: float) -> bool:
        """Ejection expired: waiting for a successful probe."""
        return self.ejected_until is not None and now >= self.ejected_until

    def on_success(self) -> None:
        """A request completed without an endpoint-side failure."""
        self.consecutive_failures = 0

    def on_failure(self, now: float, settings: HealthConfig, may_eject: bool = True) -> bool:
        """Count a failure; return True when this failure ejects the endpoint."""
        self.consecutive_failures += 1
        if (
            self.ejected_until is not None
            or self.consecutive_failures < settings.consecutive_failures
        ):
            return False
        if not may_eject:
            return False
        if now - self.last_recovered > settings.max_ejection_s:
            self.ejections_in_a_row = 0  # healthy long enough: back-off starts over
        self.ejections_in_a_row += 1
        ejection_s = min(
            settings.base_ejection_s * 2 ** (self.ejections_in_a_row - 1), settings.max_ejection_s
        )
        self.ejected_until = now + ejection_s
        self.total_ejections += 1
        self.consecutive_failures = 0
        return True

    def adopt_ejection(self, until: float, in_a_row: int, now: float) -> bool:
        """Honour another replica's ejection until `until` (a later own one is kept); the
        back-off continues from its count. True when this changed the endpoint's state."""
        if until <= now or (self.ejected_until is not None and self.ejected_until >= until):
            return False
        self.ejected_until = until
        self.ejections_in_a_row = max(self.ejections_in_a_row, in_a_row)
        self.consecutive_failures = 0
        return True

    def on_probe(self, ok: bool, now: float, settings: HealthConfig) -> None:
        """Result of an active probe."""
        if ok:
            self.probe_failures = 0
            self.probe_down = False
            if self.ejected_until is not None and now >= self.ejected_until:
                self.ejected_until = None
                self.last_recovered = now
            return
        self.probe_failures += 1
        if self.probe_failures >= settings.unhealthy_after_probe_failures:
            self.probe_down = True

    def seconds_until_retry(self, now: float) -> float:
        """A hint for Retry-After: time until the ejection expires (≥ 1 s)."""
        if self.ejected_until is None:
            return 1.0
        return max(1.0, self.ejected_until - now)
