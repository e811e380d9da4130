"""Pure autoscaling decision shared by both engines (no clock, no I/O).

Every `interval` the autoscaler compares the capacity a model needs (demand plus the
gateway backlog spread over one interval, ÷ target utilisation) with what it has (up
replicas plus those being provisioned). Short → add replicas to the cheapest group per unit
of capacity that is up and whose provider is not locked out, within `max_scale` × its
planned replicas; they serve after acquisition + model load. Long by more than 25 % →
release added replicas, dearest first, at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class GroupView:
    """What the autoscaler knows about one group of a model."""

    index: int
    capacity_rps: float  # per replica at the SLO
    price: float  # per replica-hour
    up_replicas: float  # serving now (planned + added, minus down)
    pending: int  # added, still provisioning
    extras: int  # added replicas serving or pending
    limit: int  # most replicas (planned × max_scale) the group may hold
    planned: int
    usable: bool  # up and its provider not locked out


def decide(needed_rps: float, groups: list[GroupView]) -> dict[int, int]:
    """Replica deltas per group index: > 0 to provision, < 0 to release (added ones only)."""
    have = sum((group.up_replicas + group.pending) * group.capacity_rps for group in groups)
    out: dict[int, int] = {}
    if have < needed_rps:
        short = needed_rps - have
        for group in sorted(groups, key=lambda view: (_price_per_rps(view), view.index)):
            if not group.usable or group.capacity_rps <= 0:
                continue
            room = group.limit - (group.planned + group.extras)
            if room <= 0:
                continue
            add = min(room, math.ceil(short / group.capacity_rps))
            if add > 0:
                out[group.index] = add
                short -= add * group.capacity_rps
            if short <= 0:
                break
    elif have > 1.25 * needed_rps:
        spare = have - needed_rps
        for group in sorted(groups, key=lambda view: (-_price_per_rps(view), view.index)):
            if group.extras <= 0 or group.capacity_rps <= 0:
                continue
            drop = min(group.extras, int(spare // group.capacity_rps))
            if drop > 0:
                out[group.index] = -drop
                spare -= drop * group.capacity_rps
    return out


def _price_per_rps(group: GroupView) -> float:
    """What one req/s of the group's capacity costs (per replica-hour)."""
    return group.price / max(group.capacity_rps, 1e-9)
