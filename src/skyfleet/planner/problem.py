"""The planning problem in arrays: columns (offering pool × model × replica type) and demand.

A column is one way to add a replica: an offering pool (provider, region(s), accelerator,
tier) used for one model with one replica type (TP and capacity per bucket).

Quotas are exact. In provider-resilience mode, regions of one provider that are identical but
for the region (accelerator, tier, price, availability, instance and billing unit) are pooled
into one column with the summed quota only when that is provably exact: every region's quota
is a whole number of blocks of s = max(billing unit, largest TP on the accelerator). All TPs
and units are powers of two dividing s, so any mix of replicas whose accelerators fit the
summed quota packs into whole blocks, and blocks go to regions without leftovers
(`build.split_pool`). Other regions keep a pool of their own.

Instances: a pool whose billing unit is larger than some replica's TP gets one integer
"units" variable per period (cost and quota count whole units); elsewhere the replicas fill
whole units by themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from skyfleet.catalog.offerings import Offering
from skyfleet.planner.capacity import ReplicaType, Unservable, replica_types
from skyfleet.workload import Workload


@dataclass(frozen=True)
class Pool:
    """One or more offerings (regions) that behave identically for the planner."""

    offerings: tuple[Offering, ...]

    @property
    def first(self) -> Offering:
        return self.offerings[0]

    @property
    def quota(self) -> int:
        """Accelerators, summed over the pooled regions (each in whole billing units)."""
        return sum(o.quota for o in self.offerings)

    @property
    def unit(self) -> int:
        return self.first.unit

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


@dataclass
class Options:
    """Constraints and knobs of one planning run."""

    resilience: str = "provider"  # provider | region | none
    spot_in_survivors: str = "none"  # none | discounted
    headroom: float = 0.0  # spare capacity over demand, normal operation and after a loss
    shed_on_loss: list[str] = field(default_factory=list)  # priorities shed during a loss
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
    demand: np.ndarray  # [M, T] req/s (forecast)
    fractions: list[list[float]]  # [M][B]
    rtypes: list[list[ReplicaType]]  # [M][K]
    unservable: list[list[Unservable]]
    options: Options
    period_hours: float
    groups: list[str] = field(default_factory=list)  # failure domains (provider or region)
    # Per-column arrays (filled by `finish`).
    col_m: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    col_pool: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    col_tp: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    col_k: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    col_group: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    col_provider: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    col_avail: np.ndarray = field(default_factory=lambda: np.zeros(0))
    col_cap: np.ndarray = field(default_factory=lambda: np.zeros(0))  # normal, effective
    col_surv: np.ndarray = field(default_factory=lambda: np.zeros(0))  # after a loss
    col_price: np.ndarray = field(default_factory=lambda: np.zeros(0))  # $/replica-hour
    col_committed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    providers: list[str] = field(default_factory=list)
    pool_units: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    need: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # [M, T] normal target
    need_n1: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # [M, T] after loss

    @property
    def T(self) -> int:
        return int(self.demand.shape[1])

    @property
    def M(self) -> int:
        return int(self.demand.shape[0])

    def offering(self, j: int) -> Offering:
        return self.pools[self.columns[j].pool].first

    def group_of(self, j: int) -> str:
        return self.groups[int(self.col_group[j])]

    def provider_of(self, j: int) -> str:
        return self.providers[int(self.col_provider[j])]

    def eff_cap(self, j: int) -> float:
        """Req/s of the bucket mix one replica of column j counts for (availability, target)."""
        return float(self.col_cap[j])

    def replica_price(self, j: int) -> float:
        return float(self.col_price[j])

    def committed(self, j: int) -> bool:
        return bool(self.col_committed[j])

    def uses_units(self, pool: int) -> bool:
        """Whether a pool needs a units variable (some replica is smaller than its unit)."""
        return bool(self.pool_units[pool])

    def unit_price(self, pool: int) -> float:
        """$ per billing-unit-hour of a pool."""
        p = self.pools[pool]
        return p.first.price * p.unit

    def cost(
        self,
        y: np.ndarray,
        cols: list[int] | None = None,
        periods: list[int] | None = None,
        relaxed: bool = False,
    ) -> float:
        """$ over `periods` of replicas `y` [J, T]: whole billing units unless `relaxed`."""
        cs = np.arange(len(self.columns)) if cols is None else np.asarray(cols, dtype=int)
        ts = np.arange(self.T) if periods is None else np.asarray(periods, dtype=int)
        if len(cs) == 0 or len(ts) == 0:
            return 0.0
        sub = y[np.ix_(cs, ts)]
        units = self.pool_units[self.col_pool[cs]]
        total = float((self.col_price[cs][~units, None] * sub[~units]).sum())
        if units.any():
            ucs = cs[units]
            gpus = np.zeros((len(self.pools), len(ts)))
            np.add.at(gpus, self.col_pool[ucs], self.col_tp[ucs, None] * sub[units])
            used = np.nonzero(gpus.sum(axis=1) > 0)[0]
            for p in used:
                unit = self.pools[p].unit
                n = gpus[p] / unit if relaxed else np.ceil(gpus[p] / unit - 1e-9)
                total += float(n.sum()) * self.unit_price(int(p))
        return total * self.period_hours

    def finish(self) -> None:
        """Fill the per-column arrays and per-model targets from the columns."""
        o = self.options
        cols = self.columns
        offs = [self.pools[c.pool].first for c in cols]

        def domain(x: Offering) -> str:
            return x.provider if o.resilience != "region" else f"{x.provider}/{x.region}"

        self.groups = sorted({domain(x) for x in offs})
        self.providers = sorted({x.provider for x in offs})
        gi = {g: i for i, g in enumerate(self.groups)}
        pi = {p: i for i, p in enumerate(self.providers)}
        self.col_m = np.array([c.m for c in cols], dtype=int)
        self.col_pool = np.array([c.pool for c in cols], dtype=int)
        self.col_tp = np.array([c.rtype.tp for c in cols], dtype=int)
        self.col_k = np.array([self.rtypes[c.m].index(c.rtype) for c in cols], dtype=int)
        self.col_group = np.array([gi[domain(x)] for x in offs], dtype=int)
        self.col_provider = np.array([pi[x.provider] for x in offs], dtype=int)
        self.col_avail = np.array([x.availability for x in offs])
        mix = np.array([c.rtype.cap_mix for c in cols])
        self.col_cap = mix * self.col_avail * o.utilization
        spot = np.array([x.tier == "spot" for x in offs], dtype=bool)
        surv_avail = np.where(
            spot, self.col_avail if o.spot_in_survivors == "discounted" else 0.0, 1.0
        )
        self.col_surv = mix * surv_avail * o.utilization
        self.col_price = np.array([x.price * c.rtype.tp for x, c in zip(offs, cols, strict=True)])
        self.col_committed = np.array([x.committed for x in offs], dtype=bool)
        self.pool_units = np.zeros(len(self.pools), dtype=bool)
        for c in cols:
            if c.rtype.tp < self.pools[c.pool].unit:
                self.pool_units[c.pool] = True
        kept = np.array([mw.kept_on_loss(o.shed_on_loss) for mw in self.workload.models])
        self.need = self.demand * (1.0 + o.headroom)
        self.need_n1 = self.need * kept[:, None]


def _blocks(offerings: list[Offering], max_tp: dict[str, int]) -> int:
    o = offerings[0]
    return max(o.unit, max_tp.get(o.accelerator, 1))


def pool_offerings(
    offerings: list[Offering], by_region: bool, max_tp: dict[str, int]
) -> list[Pool]:
    """Pools of identical regions whose quotas are whole blocks (see the module docstring)."""
    if by_region:
        return [Pool((o,)) for o in offerings]
    groups: dict[tuple[object, ...], list[Offering]] = {}
    for o in offerings:
        k = (o.provider, o.accelerator, o.tier, o.price, o.availability, o.per_instance, o.unit)
        groups.setdefault(k, []).append(o)
    pools: list[Pool] = []
    for g in groups.values():
        s = _blocks(g, max_tp)
        whole = [o for o in g if o.quota % s == 0]
        if len(whole) > 1:
            pools.append(Pool(tuple(whole)))
        else:
            whole = []
        pools.extend(Pool((o,)) for o in g if o not in whole)
    return pools


def build_problem(
    workload: Workload,
    offerings: list[Offering],
    options: Options,
    measured: list[object] | None = None,
    rtypes: tuple[list[list[ReplicaType]], list[list[Unservable]]] | None = None,
) -> Problem:
    """Columns for every (pool, model, replica type) where the model meets its SLO.

    `rtypes` reuses replica types computed for the same workload (they depend only on the
    workload and the accelerators offered).
    """
    from skyfleet.perf import Profile

    accels = sorted({o.accelerator for o in offerings})
    max_inst = {a: max(o.per_instance for o in offerings if o.accelerator == a) for a in accels}
    if rtypes is None:
        profiles = [p for p in measured or [] if isinstance(p, Profile)]
        for mw in workload.models:
            for path in mw.profiles:
                profiles.append(Profile.load(path))
        all_rts: list[list[ReplicaType]] = []
        all_bad: list[list[Unservable]] = []
        for mw in workload.models:
            rts, bad = replica_types(mw, accels, max_inst, profiles)
            all_rts.append(rts)
            all_bad.append(bad)
    else:
        all_rts, all_bad = rtypes
    used_tp: dict[str, int] = {}
    for rts in all_rts:
        for rt in rts:
            used_tp[rt.accelerator] = max(used_tp.get(rt.accelerator, 1), rt.tp)
    by_region = not options.pool_regions or options.resilience == "region"
    pools = pool_offerings(offerings, by_region, used_tp)
    columns: list[Column] = []
    for m in range(len(workload.models)):
        for pi, pool in enumerate(pools):
            o = pool.first
            for rt in all_rts[m]:
                if (
                    rt.accelerator == o.accelerator
                    and o.per_instance % rt.tp == 0
                    and rt.tp <= min(o.quota for o in pool.offerings)
                ):
                    columns.append(Column(pi, m, rt))
    demand = np.array([workload.demand(mw.name) for mw in workload.models], dtype=float)
    prob = Problem(
        workload=workload,
        pools=pools,
        columns=columns,
        demand=demand,
        fractions=[mw.bucket_fractions() for mw in workload.models],
        rtypes=all_rts,
        unservable=all_bad,
        options=options,
        period_hours=workload.period_hours,
    )
    prob.finish()
    return prob
