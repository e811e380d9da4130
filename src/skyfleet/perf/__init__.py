"""The engine performance model (pure: no I/O besides Profile load/save)."""

from skyfleet.perf.capacity import (
    RequestSizes,
    SteadyState,
    max_rate_at_slo,
    max_throughput,
    steady_state,
)
from skyfleet.perf.profile import (
    DecodePoint,
    Efficiency,
    EngineSettings,
    PrefillPoint,
    Profile,
    default_profile,
    fit_profile,
    kv_bytes_per_token_per_device,
    kv_capacity_tokens,
    parse_profile_spec,
    weight_bytes_per_device,
)

__all__ = [
    "DecodePoint",
    "Efficiency",
    "EngineSettings",
    "PrefillPoint",
    "Profile",
    "RequestSizes",
    "SteadyState",
    "default_profile",
    "fit_profile",
    "kv_bytes_per_token_per_device",
    "kv_capacity_tokens",
    "max_rate_at_slo",
    "max_throughput",
    "parse_profile_spec",
    "steady_state",
    "weight_bytes_per_device",
]
