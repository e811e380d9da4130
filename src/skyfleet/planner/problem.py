"""The planning problem in arrays: columns (offering × model × replica type) and demand.

A column is one way to add a replica: an offering (provider, region, accelerator, tier) used
for one model with one replica type (TP and capacity per bucket). In provider-resilience mode,
offerings of one provider that are identical but for the region (same accelerator, tier, price
and availability) are pooled into one column with the summed quota — an exact reduction — and
split back over regions when the plan is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from skyfleet.catalog.offerings import Offering
from skyfleet.planner.capacity import ReplicaType, Unservable, replica_types
from skyfleet.workload import Workload


@dataclass(frozen=True)
class Pool:
    """One or more offerings that behave identically for the planner (summed quota)."""

    offerings: tuple[Offering, ...]

    @property
    def first(self) -> Offering:
        return self.offerings[0]

    @property
    def quota(self) -> int:
        return sum(o.quota for o in self.offerings)

    @property
    def label(self) -> str:
        o = self.first
        regions = ",".join(x.region for x in self.offerings)
        return f"{o.provider}/{regions}/{o.accelerator}/{o.tier}"


@dataclass(frozen=True)
class Column:
    """A replica of `rtype` for model `m` on pool `pool`."""

    pool: int
    m: int
    rtype: ReplicaType

    def price(self, pools: list[Pool]) -> float:
        """$ per replica-hour."""
        return pools[self.pool].first.price * self.rtype.tp


@dataclass
class Options:
    """Constraints and knobs of one planning run."""

    resilience: str = "provider"  # provider | region | none
    max_share: float | None = None
    min_providers: int = 1
    min_provider_share: float = 0.05  # of demand, for a provider to count towards min_providers
    utilization: float = 1.0
    time_limit_s: float = 60.0
    mip_rel_gap: float = 0.005
    pool_regions: bool = True


@dataclass
class Problem:
    """Everything the solvers need, as plain arrays."""

    workload: Workload
    pools: list[Pool]
    columns: list[Column]
    demand: np.ndarray  # [M, T] req/s
    fractions: list[list[float]]  # [M][B]
    rtypes: list[list[ReplicaType]]  # [M][K]
    unservable: list[list[Unservable]]
    options: Options
    period_hours: float
    groups: list[str] = field(default_factory=list)  # failure domains (provider or region)

    @property
    def T(self) -> int:
        return int(self.demand.shape[1])

    @property
    def M(self) -> int:
        return int(self.demand.shape[0])

    def offering(self, j: int) -> Offering:
        return self.pools[self.columns[j].pool].first

    def group_of(self, j: int) -> str:
        o = self.offering(j)
        return o.provider if self.options.resilience != "region" else f"{o.provider}/{o.region}"

    def provider_of(self, j: int) -> str:
        return self.offering(j).provider

    def eff_cap(self, j: int) -> float:
        """Req/s of the bucket mix one replica of column j counts for (availability, target)."""
        c = self.columns[j]
        a = self.pools[c.pool].first.availability
        return c.rtype.cap_mix * a * self.options.utilization

    def replica_price(self, j: int) -> float:
        return self.columns[j].price(self.pools)

    def committed(self, j: int) -> bool:
        return self.offering(j).committed


def _pool(offerings: list[Offering], by_region: bool) -> list[Pool]:
    if by_region:
        return [Pool((o,)) for o in offerings]
    groups: dict[tuple[object, ...], list[Offering]] = {}
    for o in offerings:
        k = (o.provider, o.accelerator, o.tier, o.price, o.availability, o.per_instance)
        groups.setdefault(k, []).append(o)
    return [Pool(tuple(g)) for g in groups.values()]


def build_problem(
    workload: Workload,
    offerings: list[Offering],
    options: Options,
    measured: list[object] | None = None,
) -> Problem:
    """Columns for every (pool, model, replica type) where the model meets its SLO."""
    from skyfleet.perf import Profile

    profiles = [p for p in measured or [] if isinstance(p, Profile)]
    for mw in workload.models:
        for path in mw.profiles:
            profiles.append(Profile.load(path))
    pools = _pool(offerings, by_region=not options.pool_regions or options.resilience == "region")
    accels = sorted({o.accelerator for o in offerings})
    max_tp = {a: max(o.per_instance for o in offerings if o.accelerator == a) for a in accels}
    rtypes: list[list[ReplicaType]] = []
    unservable: list[list[Unservable]] = []
    columns: list[Column] = []
    for m, mw in enumerate(workload.models):
        rts, bad = replica_types(mw, accels, max_tp, profiles)
        rtypes.append(rts)
        unservable.append(bad)
        for pi, pool in enumerate(pools):
            for rt in rts:
                o = pool.first
                if rt.accelerator == o.accelerator and rt.tp <= min(o.per_instance, pool.quota):
                    columns.append(Column(pi, m, rt))
    demand = np.array([workload.demand(mw.name) for mw in workload.models], dtype=float)
    fractions = [mw.bucket_fractions() for mw in workload.models]
    prob = Problem(
        workload=workload,
        pools=pools,
        columns=columns,
        demand=demand,
        fractions=fractions,
        rtypes=rtypes,
        unservable=unservable,
        options=options,
        period_hours=workload.period_hours,
    )
    prob.groups = sorted({prob.group_of(j) for j in range(len(columns))})
    return prob
