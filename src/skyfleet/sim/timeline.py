"""A scenario resolved against a fleet: which groups lose how much capacity, and when.

Both engines read the same `Timeline`: down intervals per group (outages and spot
preemptions, with the provisioning delay added where replicas must be re-acquired or reload
the model), demand multipliers per model (surges), and provider lockouts (control-plane
outages block new replicas). The fluid engine averages them over each step; the
request-level engine applies them at their exact times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from skyfleet.sim.fleet import Fleet
from skyfleet.sim.scenario import ALL, LARGEST, Scenario


@dataclass(frozen=True)
class Down:
    """`fraction` of a group's replicas unavailable over [start, end)."""

    group: int
    start: float
    end: float
    fraction: float
    cause: str  # outage label or "preemption"
    fails_in_flight: bool = True  # False: running requests complete, new ones are refused


@dataclass(frozen=True)
class OutageSpan:
    """An outage as reported: label, provider, start and end of the fault itself."""

    label: str
    provider: str
    start: float
    end: float
    fraction: float


@dataclass
class Timeline:
    """Everything time-dependent the engines need."""

    horizon: float
    downs: list[Down] = field(default_factory=list)
    surges: list[tuple[str | None, float, float, float]] = field(default_factory=list)
    lockouts: list[tuple[str, float, float]] = field(default_factory=list)  # provider, [start,end)
    outages: list[OutageSpan] = field(default_factory=list)

    def up_factor(self, group: int, t0: float, t1: float) -> float:
        """Mean fraction of the group's replicas up over [t0, t1)."""
        f = 1.0
        for d in self.downs:
            if d.group != group or d.end <= t0 or d.start >= t1:
                continue
            overlap = (min(d.end, t1) - max(d.start, t0)) / (t1 - t0)
            f *= 1.0 - d.fraction * overlap
        return f

    def up_matrix(self, n_groups: int, edges: np.ndarray) -> np.ndarray:
        """[steps, groups] mean up fraction per step (vectorised over steps)."""
        t0, t1 = edges[:-1], edges[1:]
        out = np.ones((len(t0), n_groups))
        for d in self.downs:
            overlap = np.clip(np.minimum(d.end, t1) - np.maximum(d.start, t0), 0, None) / (t1 - t0)
            out[:, d.group] *= 1.0 - d.fraction * overlap
        return out

    def surge_factor(self, model: str, edges: np.ndarray) -> np.ndarray:
        """[steps] mean demand multiplier per step for a model."""
        t0, t1 = edges[:-1], edges[1:]
        out = np.ones(len(t0))
        for m, s, e, mult in self.surges:
            if m is not None and m != model:
                continue
            overlap = np.clip(np.minimum(e, t1) - np.maximum(s, t0), 0, None) / (t1 - t0)
            out *= 1.0 + (mult - 1.0) * overlap
        return out

    def surge_at(self, model: str, t: float) -> float:
        out = 1.0
        for m, s, e, mult in self.surges:
            if (m is None or m == model) and s <= t < e:
                out *= mult
        return out

    def locked(self, provider: str, t: float) -> bool:
        return any(p == provider and s <= t < e for p, s, e in self.lockouts)


def resolve(scenario: Scenario, fleet: Fleet, horizon: float | None = None) -> Timeline:
    """Map the scenario's provider names and times onto the fleet's groups."""
    h = horizon or scenario.horizon or fleet.horizon_s
    tl = Timeline(h)
    load = scenario.provisioning.model_load
    for o in scenario.outages:
        provider = fleet.largest_provider() if o.provider == LARGEST else o.provider
        region = o.region
        if region == LARGEST:
            region = fleet.largest_region(None if provider == ALL else provider)[1]
        end = o.end + (load if o.kind == "capacity" else 0.0)
        tl.outages.append(
            OutageSpan(
                o.label if o.provider != LARGEST else o.label.replace(LARGEST, provider),
                provider,
                o.start,
                o.end,
                o.fraction,
            )
        )
        for i, g in enumerate(fleet.groups):
            if provider != ALL and g.provider != provider:
                continue
            if region and g.region != region:
                continue
            if o.model and g.model != o.model:
                continue
            tl.downs.append(
                Down(i, o.start, end, o.fraction, o.label, fails_in_flight=o.in_flight == "fail")
            )
        if o.kind == "control_plane":
            for p in sorted(fleet.providers) if provider == ALL else [provider]:
                tl.lockouts.append((p, o.start, o.end))
    for pre in scenario.preemptions:
        back = (
            pre.at + scenario.provisioning.total
            if scenario.autoscaling.replace_preempted
            else math.inf
        )
        for i, g in enumerate(fleet.groups):
            if g.spot and (pre.provider is None or pre.provider == g.provider):
                tl.downs.append(Down(i, pre.at, back, pre.fraction, "spot preemption"))
    for s in scenario.surges:
        tl.surges.append((s.model, s.start, s.end, s.multiplier))
    return tl
