"""The capacity planner: workload + offerings → replicas per offering per period (a Plan).

Public API: `skyfleet.planner.plan` (Plan, PlanEntry, export_gateway_config);
`skyfleet.planner.api.plan_workload` runs the optimiser (imports SciPy/HiGHS).
"""

from typing import TYPE_CHECKING

from skyfleet._lazy import lazy_exports

if TYPE_CHECKING:
    from skyfleet.planner.plan import Plan, PlanEntry, export_gateway_config

__all__ = ["Plan", "PlanEntry", "export_gateway_config"]

__getattr__ = lazy_exports(__name__, __all__, ("plan",))
