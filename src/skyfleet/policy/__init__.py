"""Pure routing and admission decisions (no I/O): the gateway and the simulator share them."""

from skyfleet.policy.health import EndpointHealth
from skyfleet.policy.retry import RetryBudget
from skyfleet.policy.routing import is_saturated, pick_in_tier, route
from skyfleet.policy.types import (
    ADMIT,
    TIER_ORDER,
    AdmissionDecision,
    EndpointState,
    RequestFeatures,
    RouteDecision,
)

__all__ = [
    "ADMIT",
    "TIER_ORDER",
    "AdmissionDecision",
    "EndpointHealth",
    "EndpointState",
    "RequestFeatures",
    "RetryBudget",
    "RouteDecision",
    "is_saturated",
    "pick_in_tier",
    "route",
]
