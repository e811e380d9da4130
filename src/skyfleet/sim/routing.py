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
            name=g.name,
            provider=g.provider,
            tier=g.tier,  # type: ignore[arg-type]
            capacity=max(1, g.concurrency),
            model=g.model,
            region=g.region,
            price_per_hour=g.price_per_replica_hour,
        )
        for g in groups
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
        n = len(self.groups)
        if total <= 0 or flow <= 0:
            return np.zeros(n)
        level = min(self.chunks, max(1, int(np.ceil(flow / total * self.chunks - 1e-9))))
        key = (tuple(int(c) for c in conc_caps), level)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        part = flow / level
        alloc = np.zeros(n)
        for i, s in enumerate(self.states):
            s.capacity = max(1, int(conc_caps[i]))
            s.healthy = conc_caps[i] >= 1 and rate_caps[i] > 0
            s.in_flight = 0
        for _ in range(level):
            d = route(self.features, self.states, self.config, self.rng)
            self.calls += 1
            if d.endpoint is None:
                break
            i = next(k for k, s in enumerate(self.states) if s.name == d.endpoint)
            alloc[i] += part
            self.states[i].in_flight = round(alloc[i] / rate_caps[i] * conc_caps[i])
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
