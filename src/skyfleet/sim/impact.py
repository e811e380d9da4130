"""Business-impact analysis: what each provider's failure costs, with and without N-1 spare.

For every provider of the fleet the scenario's first outage (or, without one, the
4.5-hour region power-loss drill at the busiest period) is replayed against that provider,
once on the plan as given and once on the plan with its N-1 spare removed
(`Fleet.without_spare`). Each run is compared with the same fleet's run without that
outage: requests degraded (served out of SLO) and lost (shed or failed) beyond the
baseline, minutes out of SLO, recovery time, and money lost: lost requests × value per
request, or minutes out of SLO × value per minute (Gartner's 2014 average of $5,600/min
when neither is given).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from skyfleet.sim.fleet import Fleet
from skyfleet.sim.result import SimResult
from skyfleet.sim.scenario import Outage, Scenario
from skyfleet.sim.timeline import Timeline, resolve

GARTNER_USD_PER_MINUTE = 5600.0
Engine = Callable[[Fleet, Scenario, Timeline], SimResult]


@dataclass(frozen=True)
class Value:
    """How lost service is priced."""

    per_request: float | None = None
    per_minute: float | None = None

    def money(self, lost: float, minutes: float) -> float:
        if self.per_request is not None:
            return lost * self.per_request
        return minutes * (
            self.per_minute if self.per_minute is not None else GARTNER_USD_PER_MINUTE
        )

    @property
    def basis(self) -> str:
        if self.per_request is not None:
            return f"${self.per_request:g} per lost request"
        per_minute = self.per_minute if self.per_minute is not None else GARTNER_USD_PER_MINUTE
        source = "" if self.per_minute is not None else " (Gartner 2014 average)"
        return f"${per_minute:,.0f} per minute out of SLO{source}"


def outage_template(scenario: Scenario, fleet: Fleet) -> Outage:
    """The scenario's first outage, or a 4.5-hour full outage at the busiest period."""
    if scenario.outages:
        return scenario.outages[0]
    total = sum(load.demand_rps for load in fleet.models.values())
    peak = int(np.argmax(total)) if np.ndim(total) else 0
    start = peak * fleet.period_s
    horizon = scenario.horizon or fleet.horizon_s
    start = max(0.0, min(start, horizon - 4.5 * 3600))
    return Outage(provider="*", start=start, duration=4.5 * 3600, fraction=1.0)


def _delta(run: SimResult, base: SimResult, value: Value) -> dict[str, Any]:
    degraded = (run.total("served") - run.total("served_ok")) - (
        base.total("served") - base.total("served_ok")
    )
    lost = (run.total("shed") + run.total("failed")) - (base.total("shed") + base.total("failed"))
    minutes = max(0.0, run.minutes_out_of_slo() - base.minutes_out_of_slo())
    recoveries = run.recovery_times()
    return {
        "requests_degraded": max(0.0, degraded),
        "requests_lost": max(0.0, lost),
        "minutes_out_of_slo": minutes,
        "recovery_min": (
            (None if recoveries[0] is None else recoveries[0] / 60.0) if recoveries else 0.0
        ),
        "money_lost_usd": value.money(max(0.0, lost), minutes),
        "slo_attainment": run.slo_attainment,
    }


def business_impact(
    fleet: Fleet,
    scenario: Scenario,
    engine: Engine,
    value: Value,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Per-provider impact table (with and without the N-1 spare) as plain data."""
    template = outage_template(scenario, fleet)
    quiet = scenario.model_copy(update={"outages": []})
    lean = fleet.without_spare()
    variants = {"with_spare": fleet, "without_spare": lean}
    base = {
        label: engine(variant, quiet, resolve(quiet, variant))
        for label, variant in variants.items()
    }
    rows: list[dict[str, Any]] = []
    for provider in sorted(fleet.providers):
        if progress is not None:
            progress(provider)
        outage = template.model_copy(
            update={"provider": provider, "region": None, "name": f"{provider} down"}
        )
        failing = quiet.model_copy(update={"outages": [outage]})
        row: dict[str, Any] = {"provider": provider}
        for label, variant in variants.items():
            run = engine(variant, failing, resolve(failing, variant))
            row[label] = _delta(run, base[label], value)
        rows.append(row)
    cost_with = float(base["with_spare"].cost.sum())
    cost_without = float(base["without_spare"].cost.sum())
    return {
        "outage": {
            "start_h": template.start / 3600.0,
            "duration_h": template.duration / 3600.0,
            "fraction": template.fraction,
            "kind": template.kind,
        },
        "value_basis": value.basis,
        "cost_with_spare_usd": cost_with,
        "cost_without_spare_usd": cost_without,
        "providers": rows,
    }
