"""Envoy-style outlier detection over a fleet: passive ejection with its cap.

`EndpointHealth` (policy.health) is one endpoint's bookkeeping; the detector judges an
attempt's outcome against the whole fleet, because Envoy's `max_ejection_percent` caps how
much of it may be ejected at once (one endpoint may always be). The gateway and the
simulator call the same two methods.
"""

from __future__ import annotations

from collections.abc import Iterable

from skyfleet.config import HealthConfig
from skyfleet.policy.health import EndpointHealth
from skyfleet.policy.outcome import Outcome


class OutlierDetector:
    """Counts endpoint-side failures and ejects, within `max_ejection_percent`."""

    def __init__(self, settings: HealthConfig) -> None:
        self.settings = settings

    def may_eject(self, fleet: Iterable[EndpointHealth]) -> bool:
        """Whether one more endpoint may be ejected now."""
        ejected = total = 0
        for health in fleet:
            total += 1
            ejected += health.ejected_until is not None
        return ejected == 0 or (ejected + 1) * 100.0 <= self.settings.max_ejection_percent * total

    def observe(
        self,
        health: EndpointHealth,
        outcome: Outcome,
        fleet: Iterable[EndpointHealth],
        now: float,
    ) -> bool:
        """Record an attempt's outcome on `health`; True when it ejected the endpoint."""
        if outcome.ok:
            health.on_success()
            return False
        if not outcome.endpoint_fault:
            return False
        return health.on_failure(now, self.settings, self.may_eject(fleet))
