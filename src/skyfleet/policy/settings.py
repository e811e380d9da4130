"""One converter from each config section to the settings of its pure policy.

The pydantic models in `skyfleet.config` hold the only defaults: the gateway and the
simulator both build their policies through these functions, so a value set in the fleet
config means the same in both.
"""

from __future__ import annotations

from skyfleet.config import OverloadConfig, RoutingConfig
from skyfleet.policy.admission import AdmissionSettings
from skyfleet.policy.concurrency import GradientSettings
from skyfleet.policy.hedging import HedgeSettings
from skyfleet.policy.retry import RetryBudget


def admission_settings(overload: OverloadConfig | None = None) -> AdmissionSettings:
    """Queue, deadlines, shares and shed status from the `overload:` section."""
    overload = overload or OverloadConfig()
    return AdmissionSettings(
        queue_size=overload.queue_size,
        critical_deadline_s=overload.critical_deadline_s,
        standard_deadline_s=overload.standard_deadline_s,
        sheddable_deadline_s=overload.sheddable_deadline_s,
        standard_share=overload.standard_share,
        sheddable_share=overload.sheddable_share,
        shed_status=overload.shed_status,
    )


def gradient_settings(overload: OverloadConfig, capacity: int) -> GradientSettings:
    """Adaptive-limit settings for an endpoint of `capacity` (the limit never exceeds it)."""
    return GradientSettings(
        initial_limit=capacity,
        min_limit=min(overload.min_limit, capacity),
        max_limit=capacity,
        window_s=overload.limit_window_s,
        tolerance=overload.limit_tolerance,
    )


def hedge_settings(overload: OverloadConfig | None = None) -> HedgeSettings:
    """Hedging settings from `overload.hedging`."""
    hedging = (overload or OverloadConfig()).hedging
    return HedgeSettings(
        enabled=hedging.enabled,
        percentile=hedging.percentile,
        budget_fraction=hedging.budget_percent / 100.0,
        min_samples=hedging.min_samples,
        min_delay_s=hedging.min_delay_s,
    )


def retry_budget(routing: RoutingConfig | None = None) -> RetryBudget:
    """A fresh retry budget from the `routing:` section."""
    routing = routing or RoutingConfig()
    return RetryBudget(
        ratio=routing.retry_budget_ratio,
        min_retries=routing.retry_budget_min,
        window_s=routing.retry_budget_window_s,
        max_attempts=routing.max_attempts,
    )
