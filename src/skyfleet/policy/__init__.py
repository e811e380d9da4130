"""Pure routing and admission decisions (no I/O): the gateway and the simulator share them."""

from skyfleet.policy.health import EndpointHealth
from skyfleet.policy.outcome import Outcome
from skyfleet.policy.outlier import OutlierDetector
from skyfleet.policy.retry import RetryBudget
from skyfleet.policy.routing import is_saturated, pick_in_tier, route
from skyfleet.policy.types import TIER_ORDER, EndpointState, RequestFeatures, RouteDecision

__all__ = [
    "TIER_ORDER",
    "EndpointHealth",
    "EndpointState",
    "Outcome",
    "OutlierDetector",
    "RequestFeatures",
    "RetryBudget",
    "RouteDecision",
    "is_saturated",
    "pick_in_tier",
    "route",
]
