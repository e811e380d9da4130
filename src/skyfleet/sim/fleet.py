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
        inputs = sum(fraction * tokens for tokens, _, fraction in self.sizes)
        outputs = sum(fraction * tokens for _, tokens, fraction in self.sizes)
        return RequestSizes(inputs, outputs)


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
        return {group.provider for group in self.groups if group.replicas.max() > 0}

    @property
    def regions(self) -> set[tuple[str, str]]:
        return {(group.provider, group.region) for group in self.groups}

    @property
    def horizon_s(self) -> float:
        return self.period_s * max(len(load.demand_rps) for load in self.models.values())

    def capacity_by_provider(self, period: int = 0) -> dict[str, float]:
        out: dict[str, float] = {}
        for group in self.groups:
            capacity = group.replicas_at(period) * group.capacity_rps
            out[group.provider] = out.get(group.provider, 0.0) + capacity
        return out

    def largest_provider(self) -> str:
        caps: dict[str, float] = {}
        for group in self.groups:
            capacity = float(group.replicas.mean()) * group.capacity_rps
            caps[group.provider] = caps.get(group.provider, 0.0) + capacity
        return max(sorted(caps), key=lambda provider: caps[provider])

    def largest_region(self, provider: str | None = None) -> tuple[str, str]:
        caps: dict[tuple[str, str], float] = {}
        for group in self.groups:
            if provider and group.provider != provider:
                continue
            key = (group.provider, group.region)
            caps[key] = caps.get(key, 0.0) + float(group.replicas.mean()) * group.capacity_rps
        return max(sorted(caps), key=lambda key: caps[key])

    def without_spare(self, headroom: float = 0.8) -> Fleet:
        """The same fleet with its N-1 spare removed: per model and period, the fewest
        replicas (dropping the dearest capacity first) whose capacity at the SLO carries the
        demand at `headroom` utilisation."""
        groups = [replace(group, replicas=group.replicas.copy()) for group in self.groups]
        for name, load in self.models.items():
            mine = [group for group in groups if group.model == name]
            order = sorted(
                mine,
                key=lambda group: -group.price_per_replica_hour / max(group.capacity_rps, 1e-9),
            )
            for period, demand in enumerate(load.demand_rps):
                need = demand / headroom
                capacity = sum(group.replicas_at(period) * group.capacity_rps for group in mine)
                for group in order:
                    if period >= len(group.replicas):
                        continue
                    while (
                        group.replicas[period] > 0 and capacity - group.capacity_rps >= need - 1e-9
                    ):
                        group.replicas[period] -= 1
                        capacity -= group.capacity_rps
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
    state = steady_state(profile, rate, sizes, pct)
    return (
        max(1, math.ceil(state.batch))
        if state.stable
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
    rate = (
        capacity_rps
        if capacity_rps is not None
        else max_rate_at_slo(
            profile, sizes, model.slo.ttft_s, model.slo.tpot_s, model.slo.percentile
        )
    )
    in_flight = (
        concurrency
        if concurrency is not None
        else concurrency_at(profile, rate, sizes, model.slo.percentile)
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
        rate,
        in_flight,
        profile.accelerator,
    )


def loads_from_workload(workload: object) -> dict[str, ModelLoad]:
    """ModelLoad per model of a `skyfleet.workload.Workload`."""
    from skyfleet.workload import Workload

    assert isinstance(workload, Workload)
    out: dict[str, ModelLoad] = {}
    for model in workload.models:
        fractions = model.bucket_fractions()
        buckets = zip(model.sizes, fractions, strict=True)
        out[model.name] = ModelLoad(
            name=model.name,
            spec=model.model,
            demand_rps=np.asarray(workload.demand(model.name), dtype=float),
            period_s=workload.period_hours * 3600.0,
            sizes=[(size.input_tokens, size.output_tokens, fraction) for size, fraction in buckets],
            slo=Slo(model.slo.ttft_ms / 1e3, model.slo.tpot_ms / 1e3, model.slo.percentile),
            priority_mix=(
                model.priority.critical,
                model.priority.standard,
                model.priority.sheddable,
            ),
        )
    return out


def _profile_for(
    spec: str, accelerator: str, tensor_parallel: int, measured: list[Profile]
) -> Profile:
    for profile in measured:
        if (
            profile.model == spec
            and profile.accelerator == accelerator
            and profile.tp == tensor_parallel
        ):
            return profile
    return default_profile(spec, accelerator, tensor_parallel)


def fleet_from_plan(plan: object, workload: object | None = None) -> Fleet:
    """Groups from a `Plan`'s entries; demand from the workload (or the plan's own)."""
    from skyfleet.planner.plan import Plan

    assert isinstance(plan, Plan)
    period_s = plan.meta.period_hours * 3600.0
    if workload is not None:
        loads = loads_from_workload(workload)
    else:
        loads = {}
        for model in plan.models:
            slo = Slo(
                model.slo.get("ttft_ms", 1000.0) / 1e3,
                model.slo.get("tpot_ms", 50.0) / 1e3,
                model.slo.get("percentile", 0.99),
            )
            tokens = model.tokens_per_request
            loads[model.name] = ModelLoad(
                model.name,
                model.model,
                np.asarray(model.demand_rps, dtype=float),
                period_s,
                [(tokens * 0.75, max(tokens * 0.25, 1.0), 1.0)],
                slo,
            )
    measured: list[Profile] = []
    if workload is not None:
        from skyfleet.workload import Workload

        assert isinstance(workload, Workload)
        for workload_model in workload.models:
            measured += [Profile.load(path) for path in workload_model.profiles]
    groups: list[Group] = []
    for entry in plan.entries:
        if entry.model not in loads:
            raise ConfigError(
                f"plan entry {entry.key}: model {entry.model!r} is not in the workload "
                f"(it has {', '.join(sorted(loads))})"
            )
        load = loads[entry.model]
        spec = entry.model_spec or load.spec
        profile = _profile_for(spec, entry.accelerator, entry.accelerators_per_replica, measured)
        tier = {"on_demand": "spillover", "spot": "spillover"}.get(entry.tier, "primary")
        groups.append(
            make_group(
                entry.key,
                load,
                entry.provider,
                entry.region,
                profile,
                entry.replicas,
                entry.price_per_replica_hour,
                tier,
                entry.tier == "spot",
                entry.capacity_rps_per_replica or None,
                entry.concurrency_per_replica if entry.concurrency_per_replica > 1 else None,
            )
        )
    return Fleet(groups, loads, period_s, "plan")


def fleet_from_config(config: object, workload: object) -> Fleet:
    """One group (one replica) per gateway endpoint; capacity from the perf model."""
    from skyfleet.config import FleetConfig

    assert isinstance(config, FleetConfig)
    loads = loads_from_workload(workload)
    by_endpoint: dict[str, str] = {}
    for model in config.models:
        for name in model.endpoints:
            by_endpoint[name] = model.name
    groups: list[Group] = []
    notes: list[str] = []
    for endpoint in config.endpoints:
        public = by_endpoint.get(endpoint.name)
        if public is None:
            continue
        if public not in loads:
            raise ConfigError(
                f"config model {public!r} (endpoint {endpoint.name}) is not in the workload; "
                f"the workload has: {', '.join(sorted(loads))}"
            )
        load = loads[public]
        accelerator = endpoint.accelerator or "H100-SXM-80GB"
        if not endpoint.accelerator:
            notes.append(
                f"endpoint {endpoint.name}: no accelerator given, simulated as {accelerator}"
            )
        profile = None
        for tensor_parallel in (1, 2, 4, 8):
            try:
                profile = default_profile(load.spec, accelerator, tensor_parallel)
                break
            except DoesNotFitError:
                continue
        if profile is None:
            raise ConfigError(
                f"endpoint {endpoint.name}: {load.spec} does not fit 8× {accelerator}"
            )
        price = endpoint.price.per_hour or 0.0
        if endpoint.price.per_hour is None:
            notes.append(f"endpoint {endpoint.name}: priced per token, simulated at $0/hour")
        from skyfleet.sim.fluid import rate_at_concurrency

        at_slo = max_rate_at_slo(
            profile, load.mean_sizes, load.slo.ttft_s, load.slo.tpot_s, load.slo.percentile
        )
        at_cap = rate_at_concurrency(
            profile, endpoint.capacity, load.mean_sizes, load.slo.percentile
        )
        groups.append(
            make_group(
                endpoint.name,
                load,
                endpoint.provider,
                endpoint.region or "default",
                profile,
                [1] * len(load.demand_rps),
                price,
                endpoint.tier,
                False,
                min(at_slo, at_cap),
                endpoint.capacity,
            )
        )
    if not groups:
        raise ConfigError("the config has no endpoint serving a model of the workload")
    period = next(iter(loads.values())).period_s
    overload = config.overload
    admission = admission_settings(overload)
    if not overload.enabled:
        notes.append(
            "overload control is off in the config; simulated with the gateway's default "
            "admission (bounded queue, deadlines, shares)"
        )
    return Fleet(groups, loads, period, "config", notes, admission, config.routing, config.health)
