"""The domain vocabulary shared by the config, the policies, the gateway, the planner and the
simulator (shared/DESIGN.md): one definition of each.

No imports from the rest of the package, so every module can use it.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Literal

RouteTier = Literal["primary", "spillover", "fallback"]
"""Routing order inside a model's endpoints: owned/reserved first, then spillover, then
external APIs."""
ROUTE_TIERS: tuple[RouteTier, ...] = ("primary", "spillover", "fallback")
ROUTE_TIER_ORDER: dict[str, int] = {t: i for i, t in enumerate(ROUTE_TIERS)}

PriceTier = Literal["on_demand", "spot", "reserved_1y", "reserved_3y", "owned"]
"""How capacity is bought (a catalog row's price, a plan entry)."""
PRICE_TIERS: tuple[PriceTier, ...] = ("on_demand", "spot", "reserved_1y", "reserved_3y", "owned")


class Priority(IntEnum):
    """A tenant's or request's class; a lower value is more important."""

    CRITICAL = 0
    STANDARD = 1
    SHEDDABLE = 2

    @property
    def label(self) -> str:
        """The lower-case name used in config, headers and metrics."""
        return self.name.lower()


PRIORITY_LABELS: tuple[str, ...] = tuple(p.label for p in Priority)


def parse_priority(value: str | Priority) -> Priority:
    """``critical`` / ``standard`` / ``sheddable`` (case-insensitive) → Priority."""
    if isinstance(value, Priority):
        return value
    try:
        return Priority[str(value).strip().upper()]
    except KeyError:
        raise ValueError(
            f"unknown priority {value!r}; expected one of {', '.join(PRIORITY_LABELS)}"
        ) from None
