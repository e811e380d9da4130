"""Fleet simulator: a day (or week) of demand against a plan, with outages and recovery.

Two engines share the perf model and the gateway's pure routing and admission code:
`run_fluid` (rates per step, vectorised; full scale) and `des.RequestLevelSim` (request-level,
continuous batching per replica with the emulator's engine).
"""

from typing import TYPE_CHECKING

from skyfleet._lazy import lazy_exports

if TYPE_CHECKING:
    from skyfleet.sim.api import build_fleet, simulate
    from skyfleet.sim.fleet import Fleet, Group, ModelLoad, Slo, make_group
    from skyfleet.sim.impact import Value, business_impact
    from skyfleet.sim.result import SimResult
    from skyfleet.sim.scenario import Scenario, load_scenario, parse_scenario
    from skyfleet.sim.trace import Trace, load_trace, sample_trace_path

__all__ = [
    "Fleet",
    "Group",
    "ModelLoad",
    "Scenario",
    "SimResult",
    "Slo",
    "Trace",
    "Value",
    "build_fleet",
    "business_impact",
    "load_scenario",
    "load_trace",
    "make_group",
    "parse_scenario",
    "sample_trace_path",
    "simulate",
]

__getattr__ = lazy_exports(
    __name__, __all__, ("api", "fleet", "impact", "result", "scenario", "trace")
)
