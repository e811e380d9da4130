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

    def up_matrix(self, n_groups: int, edges: np.ndarray) -> np.ndarray:
        """[steps, groups] mean up fraction per step (vectorised over steps)."""
        starts, ends = edges[:-1], edges[1:]
        out = np.ones((len(starts), n_groups))
        for down in self.downs:
            overlap = np.clip(
                np.minimum(down.end, ends) - np.maximum(down.start, starts), 0, None
            ) / (ends - starts)
            out[:, down.group] *= 1.0 - down.fraction * overlap
        return out

    def surge_factor(self, model: str, edges: np.ndarray) -> np.ndarray:
        """[steps] mean demand multiplier per step for a model."""
        starts, ends = edges[:-1], edges[1:]
        out = np.ones(len(starts))
        for surged, start, end, multiplier in self.surges:
            if surged is not None and surged != model:
                continue
            overlap = np.clip(np.minimum(end, ends) - np.maximum(start, starts), 0, None) / (
                ends - starts
            )
            out *= 1.0 + (multiplier - 1.0) * overlap
        return out

    def surge_at(self, model: str, now: float) -> float:
        out = 1.0
        for surged, start, end, multiplier in self.surges:
            if (surged is None or surged == model) and start <= now < end:
                out *= multiplier
        return out

    def locked(self, provider: str, now: float) -> bool:
        return any(
            locked == provider and start <= now < end for locked, start, end in self.lockouts
        )


def resolve(scenario: Scenario, fleet: Fleet, horizon: float | None = None) -> Timeline:
    """Map the scenario's provider names and times onto the fleet's groups."""
    timeline = Timeline(horizon or scenario.horizon or fleet.horizon_s)
    load = scenario.provisioning.model_load
    for outage in scenario.outages:
        provider = fleet.largest_provider() if outage.provider == LARGEST else outage.provider
        region = outage.region
        if region == LARGEST:
            region = fleet.largest_region(None if provider == ALL else provider)[1]
        end = outage.end + (load if outage.kind == "capacity" else 0.0)
        label = outage.label
        timeline.outages.append(
            OutageSpan(
                label if outage.provider != LARGEST else label.replace(LARGEST, provider),
                provider,
                outage.start,
                outage.end,
                outage.fraction,
            )
        )
        fails = outage.in_flight == "fail"
        for index, group in enumerate(fleet.groups):
            if provider != ALL and group.provider != provider:
                continue
            if region and group.region != region:
                continue
            if outage.model and group.model != outage.model:
                continue
            timeline.downs.append(
                Down(index, outage.start, end, outage.fraction, label, fails_in_flight=fails)
            )
        if outage.kind == "control_plane":
            for locked in sorted(fleet.providers) if provider == ALL else [provider]:
                timeline.lockouts.append((locked, outage.start, outage.end))
    for preemption in scenario.preemptions:
        back = (
            preemption.at + scenario.provisioning.total
            if scenario.autoscaling.replace_preempted
            else math.inf
        )
        for index, group in enumerate(fleet.groups):
            if group.spot and (
                preemption.provider is None or preemption.provider == group.provider
            ):
                timeline.downs.append(
                    Down(index, preemption.at, back, preemption.fraction, "spot preemption")
                )
    for surge in scenario.surges:
        timeline.surges.append((surge.model, surge.start, surge.end, surge.multiplier))
    return timeline
