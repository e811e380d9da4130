"""One-call entry points: build a fleet from files, run a scenario on an engine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from skyfleet.errors import ConfigError
from skyfleet.sim.fleet import Fleet, ModelLoad, fleet_from_config, fleet_from_plan
from skyfleet.sim.result import SimResult
from skyfleet.sim.scenario import Scenario
from skyfleet.sim.timeline import resolve
from skyfleet.sim.trace import DAY, Trace, load_trace
from skyfleet.sim.yamlsrc import Loc

EngineName = Literal["fluid", "des"]


def build_fleet(
    *,
    plan: str | Path | None = None,
    config: str | Path | None = None,
    workload: str | Path | None = None,
    trace: str | Path | Trace | None = None,
    daily_volume: float | None = None,
    trace_model: str | None = None,
) -> Fleet:
    """A fleet from a plan or a gateway config, with demand from a workload and/or a trace."""
    from skyfleet.workload import load_workload

    if (plan is None) == (config is None):
        raise ConfigError("give exactly one of --plan PLAN.yaml or --config FLEET.yaml")
    demand = load_workload(workload) if workload is not None else None
    if plan is not None:
        from skyfleet.planner.plan import Plan

        fleet = fleet_from_plan(Plan.load(plan), demand)
    else:
        from skyfleet.config import load_config

        if demand is None:
            raise ConfigError(
                "--config needs --workload W.yaml (the models' sizes, SLOs and demand)"
            )
        fleet = fleet_from_config(load_config(config), demand)  # type: ignore[arg-type]
    if trace is not None:
        replayed = trace if isinstance(trace, Trace) else load_trace(trace)
        name = trace_model or (next(iter(fleet.models)) if len(fleet.models) == 1 else None)
        if name is None or name not in fleet.models:
            raise ConfigError(
                f"the fleet serves {', '.join(sorted(fleet.models))}; say which one the trace is "
                "for with --trace-model"
            )
        load = fleet.models[name]
        volume = daily_volume if daily_volume is not None else float(np.mean(load.demand_rps) * DAY)
        input_tokens, output_tokens = replayed.mean_sizes()
        fleet.models[name] = ModelLoad(
            load.name,
            load.spec,
            load.demand_rps,
            load.period_s,
            [(input_tokens, output_tokens, 1.0)],
            load.slo,
            load.priority_mix,
            trace=replayed,
            daily_volume=volume,
        )
    elif daily_volume is not None:
        total = sum(float(np.mean(load.demand_rps)) * DAY for load in fleet.models.values())
        scale = daily_volume / max(total, 1e-12)
        for load in fleet.models.values():
            load.demand_rps = load.demand_rps * scale
    return fleet


def simulate(
    fleet: Fleet,
    scenario: Scenario,
    engine: EngineName = "fluid",
    *,
    step: float | None = None,
    horizon: float | None = None,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
    scenario_path: str | Path = "scenario",
    lines: dict[Loc, int] | None = None,
) -> SimResult:
    """Check the scenario's names against the fleet, then run it on one engine."""
    scenario.check_against(fleet.providers, fleet.regions, set(fleet.models), scenario_path, lines)
    timeline = resolve(scenario, fleet, horizon)
    if engine == "fluid":
        from skyfleet.sim.fluid import run_fluid

        return run_fluid(fleet, scenario, timeline, step=step, seed=seed, progress=progress)
    if engine == "des":
        from skyfleet.sim.des import RequestLevelSim

        sim = RequestLevelSim(fleet, scenario, timeline, step=step, seed=seed, progress=progress)
        return sim.run()
    raise ConfigError(f"unknown engine {engine!r}; expected fluid or des")
