"""The engine performance model (pure: no I/O besides Profile load/save)."""

from typing import TYPE_CHECKING

from skyfleet._lazy import lazy_exports

if TYPE_CHECKING:
    from skyfleet.perf.capacity import (
        RequestSizes,
        SteadyState,
        max_rate_at_slo,
        max_throughput,
        rate_at_concurrency,
        steady_state,
    )
    from skyfleet.perf.profile import (
        EFFICIENCY_PRESETS,
        DecodePoint,
        Efficiency,
        EngineSettings,
        PrefillPoint,
        Profile,
        default_preset,
        default_profile,
        fit_profile,
        kv_bytes_per_token_per_device,
        kv_capacity_tokens,
        parse_profile_spec,
        weight_bytes_per_device,
    )

__all__ = [
    "EFFICIENCY_PRESETS",
    "DecodePoint",
    "Efficiency",
    "EngineSettings",
    "PrefillPoint",
    "Profile",
    "RequestSizes",
    "SteadyState",
    "default_preset",
    "default_profile",
    "fit_profile",
    "kv_bytes_per_token_per_device",
    "kv_capacity_tokens",
    "max_rate_at_slo",
    "max_throughput",
    "parse_profile_spec",
    "rate_at_concurrency",
    "steady_state",
    "weight_bytes_per_device",
]

__getattr__ = lazy_exports(__name__, __all__, ("capacity", "profile"))
