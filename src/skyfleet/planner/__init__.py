"""The capacity planner: workload + offerings → replicas per offering per period (a Plan).

Public API: `skyfleet.planner.plan` (Plan, PlanEntry, export_gateway_config) is light to import;
`skyfleet.planner.api.plan_workload` runs the optimiser (imports SciPy/HiGHS).
"""

from skyfleet.planner.plan import Plan, PlanEntry, export_gateway_config

__all__ = ["Plan", "PlanEntry", "export_gateway_config"]
