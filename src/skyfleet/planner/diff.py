"""`skyfleet plan diff OLD NEW`: what changed between two plan files (pure)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from skyfleet.planner.plan import Plan, PlanEntry

_META = (
    "resilience",
    "spot_in_survivors",
    "headroom",
    "shed_on_loss",
    "max_share",
    "min_providers",
    "target_utilization",
    "status",
)


@dataclass
class EntryChange:
    """One offering × model × TP × tier whose replicas or price changed."""

    key: str
    old_peak: int
    new_peak: int
    old_cost_per_day: float
    new_cost_per_day: float

    @property
    def change(self) -> str:
        if self.old_peak == 0:
            return "added"
        if self.new_peak == 0:
            return "removed"
        return "changed"


@dataclass
class PlanDiff:
    """Totals, settings, providers, entries and N-1 coverage of NEW against OLD."""

    old_cost_per_day: float
    new_cost_per_day: float
    settings: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    providers_added: list[str] = field(default_factory=list)
    providers_removed: list[str] = field(default_factory=list)
    entries: list[EntryChange] = field(default_factory=list)
    coverage: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def delta_per_day(self) -> float:
        return self.new_cost_per_day - self.old_cost_per_day

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["delta_per_day"] = round(self.delta_per_day, 2)
        return d


def _per_day(e: PlanEntry, plan: Plan) -> float:
    return e.cost(plan.meta.period_hours) / (plan.meta.period_hours * plan.meta.periods) * 24.0


def diff_plans(old: Plan, new: Plan) -> PlanDiff:
    """The differences a reviewer of a plan change needs, largest cost change first."""
    d = PlanDiff(old.totals.cost_per_day, new.totals.cost_per_day)
    om, nm = old.meta.model_dump(), new.meta.model_dump()
    d.settings = {k: (om[k], nm[k]) for k in _META if om[k] != nm[k]}
    if old.meta.workload != new.meta.workload:
        d.notes.append(f"different workloads: {old.meta.workload!r} vs {new.meta.workload!r}")
    if (old.meta.periods, old.meta.period_hours) != (new.meta.periods, new.meta.period_hours):
        d.notes.append(
            f"horizons differ: {old.meta.periods} × {old.meta.period_hours:g} h vs "
            f"{new.meta.periods} × {new.meta.period_hours:g} h (costs compared per day)"
        )
    d.providers_added = sorted(set(new.providers) - set(old.providers))
    d.providers_removed = sorted(set(old.providers) - set(new.providers))
    olds = {e.key: e for e in old.entries}
    news = {e.key: e for e in new.entries}
    for key in sorted(set(olds) | set(news)):
        o, n = olds.get(key), news.get(key)
        ch = EntryChange(
            key=key,
            old_peak=max(o.replicas, default=0) if o else 0,
            new_peak=max(n.replicas, default=0) if n else 0,
            old_cost_per_day=round(_per_day(o, old), 2) if o else 0.0,
            new_cost_per_day=round(_per_day(n, new), 2) if n else 0.0,
        )
        if (ch.old_peak, ch.old_cost_per_day) != (ch.new_peak, ch.new_cost_per_day):
            d.entries.append(ch)
    d.entries.sort(key=lambda c: -abs(c.new_cost_per_day - c.old_cost_per_day))
    oc = {c.model: c.served_after_worst_loss for c in old.coverage}
    nc = {c.model: c.served_after_worst_loss for c in new.coverage}
    for m in sorted(set(oc) | set(nc)):
        if oc.get(m) != nc.get(m):
            d.coverage[m] = (oc.get(m), nc.get(m))
    return d
