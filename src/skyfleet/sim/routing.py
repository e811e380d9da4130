"""The simulator's side of "what we simulate is what we run": the gateway's pure routing.

Both engines build `EndpointState` snapshots (one per replica group) and call
`skyfleet.policy.route` — the function the gateway calls for every request. The fluid engine
routes a step's flow in `chunks` equal parts, each placed by one `route` call on a snapshot
whose in-flight counts include the parts already placed, and caches the resulting split
per (capacities, load level).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from skyfleet.config import RoutingConfig
from skyfleet.policy import EndpointState, RequestFeatures, route
from skyfleet.sim.fleet import Group


def endpoint_states(groups: Sequence[Group]) -> list[EndpointState]:
    """Fresh snapshots for a model's groups (capacity and health filled in by the caller)."""
    return [
        EndpointState(
            name=group.name,
            provider=group.provider,
            tier=group.tier,  # type: ignore[arg-type]
            capacity=max(1, group.concurrency),
            model=group.model,
            region=group.region,
            price_per_hour=group.price_per_replica_hour,
        )
        for group in groups
    ]


class FlowRouter:
    """Splits a flow (req/s) over groups by repeated calls to the pure routing policy."""

    def __init__(
        self,
        groups: Sequence[Group],
        config: RoutingConfig | None = None,
        chunks: int = 40,
        seed: int = 0,
    ) -> None:
        self.groups = list(groups)
        self.config = config or RoutingConfig()
        self.chunks = chunks
        self.rng = random.Random(seed)
        self.states = endpoint_states(groups)
        self.features = RequestFeatures(model=groups[0].model if groups else "")
        self._cache: dict[tuple[tuple[int, ...], int], np.ndarray] = {}
        self.calls = 0

    def split(self, flow: float, rate_caps: np.ndarray, conc_caps: np.ndarray) -> np.ndarray:
        """Fractions of `flow` per group. `rate_caps` (req/s) and `conc_caps` (in-flight)
        are the groups' current capacities; a group with no capacity is unhealthy."""
        total = float(rate_caps.sum())
        group_count = len(self.groups)
        if total <= 0 or flow <= 0:
            return np.zeros(group_count)
        level = min(self.chunks, max(1, int(np.ceil(flow / total * self.chunks - 1e-9))))
        key = (tuple(int(cap) for cap in conc_caps), level)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        part = flow / level
        alloc = np.zeros(group_count)
        for index, state in enumerate(self.states):
            state.capacity = max(1, int(conc_caps[index]))
            state.healthy = conc_caps[index] >= 1 and rate_caps[index] > 0
            state.in_flight = 0
        for _ in range(level):
            decision = route(self.features, self.states, self.config, self.rng)
            self.calls += 1
            if decision.endpoint is None:
                break
            index = next(
                position
                for position, state in enumerate(self.states)
                if state.name == decision.endpoint
            )
            alloc[index] += part
            self.states[index].in_flight = round(alloc[index] / rate_caps[index] * conc_caps[index])
        # never place more than a group can carry: move overflow to groups with room
        over = np.clip(alloc - rate_caps, 0, None)
        alloc -= over
        extra = over.sum()
        if extra > 0:
            room = np.clip(rate_caps - alloc, 0, None)
            if room.sum() > 0:
                alloc += room * min(1.0, extra / room.sum())
        frac: np.ndarray = alloc / max(float(alloc.sum()), 1e-12)
        self._cache[key] = frac
        return frac
