"""The simulated fleet: replica groups (one per plan entry or gateway endpoint) and demand.

A `Group` is a set of identical replicas of one model on one offering; it is one endpoint
for the routing policy (capacity = replicas × concurrency per replica). `ModelLoad` is a
model's demand curve, request sizes, SLO and priority mix. Builders read a `Plan` or a
gateway `FleetConfig` together with a `Workload` (or a trace).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from skyfleet.config import HealthConfig, RoutingConfig
from skyfleet.errors import ConfigError, DoesNotFitError
from skyfleet.perf import Profile, RequestSizes, default_profile, max_rate_at_slo, steady_state
from skyfleet.policy.admission import AdmissionSettings
from skyfleet.policy.settings import admission_settings
from skyfleet.sim.trace import Trace
from skyfleet.vocab import PRIORITY_LABELS

PRIORITIES = PRIORITY_LABELS


@dataclass(frozen=True)
class Slo:
    """TTFT (at a percentile) and TPOT objectives, in seconds."""

    ttft_s: float = 1.0
    tpot_s: float = 0.05
    percentile: float = 0.99


@dataclass
class ModelLoad:
    """Demand for one public model: req/s per period, sizes, SLO, priority mix."""

    name: str
    spec: str
    demand_rps: np.ndarray
    period_s: float
    sizes: list[tuple[float, float, float]]  # (input, output, fraction)
    slo: Slo
    priority_mix: tuple[float, float, float] = (0.2, 0.6, 0.2)
    trace: Trace | None = None  # replayed (rescaled to daily_volume) instead of the demand curve
    daily_volume: float | None = None

    @property
    def mean_sizes(self) -> RequestSizes:
        i = sum(f * a for a, _, f in self.sizes)
        o = sum(f * b for _, b, f in self.sizes)
        return RequestSizes(i, o)


@dataclass
class Group:
    """Identical replicas of one model on one offering; one endpoint for the router."""

    name: str
    model: str
    provider: str
    region: str
    tier: str  # primary | spillover | fallback
    spot: bool
    price_per_replica_hour: float
    replicas: np.ndarray  # planned replicas per period
    profile: Profile
    capacity_rps: float  # per replica, at the SLO
    concurrency: int  # per replica: in-flight requests at that rate (the router's capacity)
    accelerator: str = ""

    def replicas_at(self, period: int) -> int:
        """Planned replicas in `period` (the plan repeats when the run is longer)."""
        return int(self.replicas[period % len(self.replicas)])


@dataclass
class Fleet:
    """Groups plus demand; `period_s` is the plan's period length."""

    groups: list[Group]
    models: dict[str, ModelLoad]
    period_s: float
    source: str = ""
    notes: list[str] = field(default_factory=list)
    admission: AdmissionSettings | None = None  # the gateway's overload settings (config)
    routing: RoutingConfig | None = None  # the gateway's routing settings (config)
    health: HealthConfig | None = None  # the gateway's outlier ejection and probes (config)

    @property
    def providers(self) -> set[str]:
        return {g.provider for g in self.groups if g.replicas.max() > 0}

    @property
    def regions(self) -> set[tuple[str, str]]:
        return {(g.provider, g.region) for g in self.groups}

    @property
    def horizon_s(self) -> float:
        return self.period_s * max(len(m.demand_rps) for m in self.models.values())

    def capacity_by_provider(self, period: int = 0) -> dict[str, float]:
        out: dict[str, float] = {}
        for g in self.groups:
            out[g.provider] = out.get(g.provider, 0.0) + g.replicas_at(period) * g.capacity_rps
        return out

    def largest_provider(self) -> str:
        caps: dict[str, float] = {}
        for g in self.groups:
            caps[g.provider] = caps.get(g.provider, 0.0) + float(g.replicas.mean()) * g.capacity_rps
        return max(sorted(caps), key=lambda p: caps[p])

    def largest_region(self, provider: str | None = None) -> tuple[str, str]:
        caps: dict[tuple[str, str], float] = {}
        for g in self.groups:
            if provider and g.provider != provider:
                continue
            k = (g.provider, g.region)
            caps[k] = caps.get(k, 0.0) + float(g.replicas.mean()) * g.capacity_rps
        return max(sorted(caps), key=lambda k: caps[k])

    def without_spare(self, headroom: float = 0.8) -> Fleet:
        """The same fleet with its N-1 spare removed: per model and period, the fewest
        replicas (dropping the dearest capacity first) whose capacity at the SLO carries the
        demand at `headroom` utilisation."""
        groups = [replace(g, replicas=g.replicas.copy()) for g in self.groups]
        for name, m in self.models.items():
            mine = [g for g in groups if g.model == name]
            order = sorted(
                mine, key=lambda g: -g.price_per_replica_hour / max(g.capacity_rps, 1e-9)
            )
            for t, dem in enumerate(m.demand_rps):
                need = dem / headroom
                cap = sum(g.replicas_at(t) * g.capacity_rps for g in mine)
                for g in order:
                    if t >= len(g.replicas):
                        continue
                    while g.replicas[t] > 0 and cap - g.capacity_rps >= need - 1e-9:
                        g.replicas[t] -= 1
                        cap -= g.capacity_rps
        return Fleet(
            groups,
            self.models,
            self.period_s,
            self.source + " (N-1 spare removed)",
            list(self.notes),
            self.admission,
            self.routing,
            self.health,
        )


def concurrency_at(profile: Profile, rate: float, sizes: RequestSizes, pct: float) -> int:
    """In-flight requests one replica holds at `rate` (Little's law on the perf model)."""
    s = steady_state(profile, rate, sizes, pct)
    return (
        max(1, math.ceil(s.batch))
        if s.stable
        else max(1, profile.max_concurrency(sizes.avg_context))
    )


def make_group(
    name: str,
    model: ModelLoad,
    provider: str,
    region: str,
    profile: Profile,
    replicas: list[int] | np.ndarray,
    price: float = 0.0,
    tier: str = "primary",
    spot: bool = False,
    capacity_rps: float | None = None,
    concurrency: int | None = None,
) -> Group:
    """A group whose capacity comes from the perf model unless given."""
    sizes = model.mean_sizes
    cap = (
        capacity_rps
        if capacity_rps is not None
        else max_rate_at_slo(
            profile, sizes, model.slo.ttft_s, model.slo.tpot_s, model.slo.percentile
        )
    )
    conc = (
        concurrency
        if concurrency is not None
        else concurrency_at(profile, cap, sizes, model.slo.percentile)
    )
    return Group(
        name,
        model.name,
        provider,
        region,
        tier,
        spot,
        price,
        np.asarray(replicas, dtype=np.int64),
        profile,
        cap,
        conc,
        profile.accelerator,
    )


def loads_from_workload(workload: object) -> dict[str, ModelLoad]:
    """ModelLoad per model of a `skyfleet.workload.Workload`."""
    from skyfleet.workload import Workload

    assert isinstance(workload, Workload)
    out: dict[str, ModelLoad] = {}
    for m in workload.models:
        fr = m.bucket_fractions()
        out[m.name] = ModelLoad(
            name=m.name,
            spec=m.model,
            demand_rps=np.asarray(workload.demand(m.name), dtype=float),
            period_s=workload.period_hours * 3600.0,
            sizes=[(b.input_tokens, b.output_tokens, f) for b, f in zip(m.sizes, fr, strict=True)],
            slo=Slo(m.slo.ttft_ms / 1e3, m.slo.tpot_ms / 1e3, m.slo.percentile),
            priority_mix=(m.priority.critical, m.priority.standard, m.priority.sheddable),
        )
    return out


def _profile_for(spec: str, accel: str, tp: int, measured: list[Profile]) -> Profile:
    for p in measured:
        if p.model == spec and p.accelerator == accel and p.tp == tp:
            return p
    return default_profile(spec, accel, tp)


def fleet_from_plan(plan: object, workload: object | None = None) -> Fleet:
    """Groups from a `Plan`'s entries; demand from the workload (or the plan's own)."""
    from skyfleet.planner.plan import Plan

    assert isinstance(plan, Plan)
    period_s = plan.meta.period_hours * 3600.0
    if workload is not None:
        loads = loads_from_workload(workload)
    else:
        loads = {}
        for md in plan.models:
            slo = Slo(
                md.slo.get("ttft_ms", 1000.0) / 1e3,
                md.slo.get("tpot_ms", 50.0) / 1e3,
                md.slo.get("percentile", 0.99),
            )
            tok = md.tokens_per_request
            loads[md.name] = ModelLoad(
                md.name,
                md.model,
                np.asarray(md.demand_rps, dtype=float),
                period_s,
                [(tok * 0.75, max(tok * 0.25, 1.0), 1.0)],
                slo,
            )
    measured: list[Profile] = []
    if workload is not None:
        from skyfleet.workload import Workload

        assert isinstance(workload, Workload)
        for m in workload.models:
            measured += [Profile.load(p) for p in m.profiles]
    groups: list[Group] = []
    for e in plan.entries:
        if e.model not in loads:
            raise ConfigError(
                f"plan entry {e.key}: model {e.model!r} is not in the workload "
                f"(it has {', '.join(sorted(loads))})"
            )
        ml = loads[e.model]
        spec = e.model_spec or ml.spec
        prof = _profile_for(spec, e.accelerator, e.accelerators_per_replica, measured)
        tier = {"on_demand": "spillover", "spot": "spillover"}.get(e.tier, "primary")
        groups.append(
            make_group(
                e.key,
                ml,
                e.provider,
                e.region,
                prof,
                e.replicas,
                e.price_per_replica_hour,
                tier,
                e.tier == "spot",
                e.capacity_rps_per_replica or None,
                e.concurrency_per_replica if e.concurrency_per_replica > 1 else None,
            )
        )
    return Fleet(groups, loads, period_s, "plan")


def fleet_from_config(config: object, workload: object) -> Fleet:
    """One group (one replica) per gateway endpoint; capacity from the perf model."""
    from skyfleet.config import FleetConfig

    assert isinstance(config, FleetConfig)
    loads = loads_from_workload(workload)
    by_endpoint: dict[str, str] = {}
    for mc in config.models:
        for n in mc.endpoints:
            by_endpoint[n] = mc.name
    groups: list[Group] = []
    notes: list[str] = []
    for ep in config.endpoints:
        public = by_endpoint.get(ep.name)
        if public is None:
            continue
        if public not in loads:
            raise ConfigError(
                f"config model {public!r} (endpoint {ep.name}) is not in the workload; "
                f"the workload has: {', '.join(sorted(loads))}"
            )
        ml = loads[public]
        accel = ep.accelerator or "H100-SXM-80GB"
        if not ep.accelerator:
            notes.append(f"endpoint {ep.name}: no accelerator given, simulated as {accel}")
        prof = None
        for tp in (1, 2, 4, 8):
            try:
                prof = default_profile(ml.spec, accel, tp)
                break
            except DoesNotFitError:
                continue
        if prof is None:
            raise ConfigError(f"endpoint {ep.name}: {ml.spec} does not fit 8× {accel}")
        price = ep.price.per_hour or 0.0
        if ep.price.per_hour is None:
            notes.append(f"endpoint {ep.name}: priced per token, simulated at $0/hour")
        from skyfleet.sim.fluid import rate_at_concurrency

        at_slo = max_rate_at_slo(
            prof, ml.mean_sizes, ml.slo.ttft_s, ml.slo.tpot_s, ml.slo.percentile
        )
        at_cap = rate_at_concurrency(prof, ep.capacity, ml.mean_sizes, ml.slo.percentile)
        groups.append(
            make_group(
                ep.name,
                ml,
                ep.provider,
                ep.region or "default",
                prof,
                [1] * len(ml.demand_rps),
                price,
                ep.tier,
                False,
                min(at_slo, at_cap),
                ep.capacity,
            )
        )
    if not groups:
        raise ConfigError("the config has no endpoint serving a model of the workload")
    period = next(iter(loads.values())).period_s
    ov = config.overload
    admission = admission_settings(ov)
    if not ov.enabled:
        notes.append(
            "overload control is off in the config; simulated with the gateway's default "
            "admission (bounded queue, deadlines, shares)"
        )
    return Fleet(groups, loads, period, "config", notes, admission, config.routing, config.health)
