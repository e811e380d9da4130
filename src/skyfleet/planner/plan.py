"""The plan file: replicas per offering per period, with cost, reasons and metadata.

A plan is YAML written by `skyfleet plan` and read by `skyfleet simulate`, the demo and
`export_gateway_config` (which turns it into the gateway's endpoints and tiers).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from skyfleet.errors import ConfigError
from skyfleet.vocab import PriceTier
from skyfleet.workload import validation_message
from skyfleet.yamlio import read_yaml

Resilience = Literal["provider", "region", "none"]
COMMITTED_TIERS: frozenset[str] = frozenset({"reserved_1y", "reserved_3y", "owned"})
HOURS_PER_MONTH = 730.0

_CFG = ConfigDict(extra="forbid")


class PlanEntry(BaseModel):
    """Replicas of one offering (provider × region × accelerator × TP × tier) serving one model."""

    model_config = _CFG

    model: str = Field(description="public model name (workload)")
    model_spec: str = Field(default="", description="catalog model served, e.g. Llama-3.1-8B")
    offering: str = Field(default="", description="catalog offering id")
    instance: str = Field(default="", description="the provider's instance type (catalog)")
    provider: str
    region: str
    accelerator: str
    accelerators_per_replica: int = Field(default=1, gt=0, description="tensor parallel size")
    tier: PriceTier
    price_per_replica_hour: float = Field(ge=0)
    capacity_rps_per_replica: float = Field(
        ge=0,
        description="req/s one replica sustains at the SLO for the workload's bucket mix (for a "
        "type that cannot serve every bucket: for the buckets it serves)",
    )
    concurrency_per_replica: int = Field(
        default=1, gt=0, description="in-flight requests one replica holds at that rate"
    )
    capacity_by_bucket: dict[str, float] = Field(
        default_factory=dict, description="req/s at the SLO per size bucket (label → rate)"
    )
    bucket_shares: dict[str, float] = Field(
        default_factory=dict,
        description="share of each bucket's demand this entry serves (demand-weighted mean)",
    )
    availability: float = Field(default=1.0, gt=0, le=1, description="spot: expected up fraction")
    replicas: list[int] = Field(description="replicas per period")
    reason: str = ""

    @property
    def key(self) -> str:
        """Unique id: `model/provider/region/acceleratorxTP/tier`."""
        return (
            f"{self.model}/{self.provider}/{self.region}/"
            f"{self.accelerator}x{self.accelerators_per_replica}/{self.tier}"
        )

    @property
    def committed(self) -> bool:
        """Reserved or owned: paid for the whole horizon, constant replica count."""
        return self.tier in COMMITTED_TIERS

    def cost(self, period_hours: float) -> float:
        """Cost of this entry over the horizon, $."""
        return self.price_per_replica_hour * period_hours * sum(self.replicas)


class ModelDemand(BaseModel):
    """One model's demand as planned."""

    model_config = _CFG

    name: str
    model: str
    demand_rps: list[float]
    tokens_per_request: float = Field(ge=0)
    slo: dict[str, float] = Field(default_factory=dict)
    bucket_fractions: dict[str, float] = Field(
        default_factory=dict, description="share of requests per size bucket (label → share)"
    )
    priority: dict[str, float] = Field(
        default_factory=dict, description="share of requests per priority class"
    )


class PlanMeta(BaseModel):
    """How and when the plan was made."""

    model_config = _CFG

    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    workload: str
    period_hours: float = Field(gt=0)
    periods: int = Field(gt=0)
    objective: str = "min cost"
    solver: str = "highs-milp"
    status: str = "optimal"
    optimality_gap: float | None = Field(default=None, description="proven relative gap")
    solve_seconds: float = 0.0
    resilience: Resilience = "provider"
    spot_in_survivors: Literal["none", "discounted"] = Field(
        default="discounted",
        description="after a loss: none = only non-spot capacity counts (plans before this "
        "field counted spot at its availability)",
    )
    headroom: float = Field(default=0.0, ge=0, description="spare capacity over demand")
    shed_on_loss: list[str] = Field(
        default_factory=list, description="priority classes the plan may shed during a loss"
    )
    target_utilization: float = 1.0
    max_share: float | None = None
    min_providers: int = 1
    spot_availability: float = 1.0
    validated: bool = Field(
        default=False, description="quotas and N-1 coverage re-checked from this file"
    )
    notes: list[str] = Field(default_factory=list)


class Totals(BaseModel):
    """Cost of the plan."""

    model_config = _CFG

    cost_horizon: float = 0.0
    cost_per_day: float = 0.0
    cost_per_month: float = 0.0
    usd_per_million_tokens: float = 0.0
    tokens_per_day: float = 0.0


class Comparison(BaseModel):
    """A baseline or variant plan's cost, for the report."""

    model_config = _CFG

    name: str
    cost_per_day: float | None = Field(description="None = infeasible")
    description: str = ""
    basis: str = Field(default="same constraints", description="or what it leaves out")
    survives: str = Field(
        default="", description="the failure it survives: provider, region or none"
    )


class IdleCapacity(BaseModel):
    """Accelerators paid for (the rest of a billing unit) that no replica uses."""

    model_config = _CFG

    offering: str
    provider: str
    region: str
    accelerator: str
    tier: PriceTier
    price_per_accelerator_hour: float = Field(ge=0)
    accelerators: list[int] = Field(description="idle accelerators per period")

    def cost(self, period_hours: float) -> float:
        return self.price_per_accelerator_hour * period_hours * sum(self.accelerators)


class Coverage(BaseModel):
    """What a model keeps after the worst single loss (capacity at the SLO, spot per
    `meta.spot_in_survivors`)."""

    model_config = _CFG

    model: str
    worst_loss: str = Field(description="the provider (or region) whose loss hurts most")
    required: float = Field(description="share of demand the plan promises after a loss")
    served_after_worst_loss: float = Field(description="min over periods, capacity ÷ demand")
    shed_rps_peak: float = Field(
        default=0.0, description="most req/s that would be shed after the worst loss"
    )
    shed_share_peak: float = Field(default=0.0, description="that, as a share of demand")


class CostStep(BaseModel):
    """One step of the cost decomposition: the cost once this constraint is added."""

    model_config = _CFG

    name: str
    cost_per_day: float | None
    delta_per_day: float | None = None
    description: str = ""


class Binding(BaseModel):
    """A binding constraint and what relaxing it is worth (LP shadow price)."""

    model_config = _CFG

    kind: str = Field(description="quota | n1 | share | min_providers | headroom")
    what: str
    saves_per_day: float = Field(description="$ per day saved by the step below")
    step: str = Field(description="e.g. '+8 accelerators of quota'")


class Plan(BaseModel):
    """Replicas per offering per period for every model of a workload."""

    model_config = _CFG

    version: int = 1
    meta: PlanMeta
    models: list[ModelDemand]
    entries: list[PlanEntry]
    totals: Totals = Totals()
    comparisons: list[Comparison] = Field(default_factory=list)
    idle: list[IdleCapacity] = Field(default_factory=list)
    coverage: list[Coverage] = Field(default_factory=list)
    decomposition: list[CostStep] = Field(default_factory=list)
    binding: list[Binding] = Field(default_factory=list)

    # -- queries ------------------------------------------------------------------------
    @property
    def providers(self) -> list[str]:
        """Providers with at least one replica in some period, sorted."""
        return sorted({e.provider for e in self.entries if any(e.replicas)})

    def replicas_at(self, period: int) -> list[tuple[PlanEntry, int]]:
        """(entry, replicas) for entries with replicas in `period` (0-based)."""
        self._check_period(period)
        return [(e, e.replicas[period]) for e in self.entries if e.replicas[period] > 0]

    def capacity_by_provider(
        self, model: str, period: int, effective: bool = False
    ) -> dict[str, float]:
        """Req/s at the SLO per provider for a model in a period (× spot availability if
        `effective`)."""
        self._check_period(period)
        out: dict[str, float] = {}
        for e in self.entries:
            if e.model != model and e.model_spec != model:
                continue
            cap = e.replicas[period] * e.capacity_rps_per_replica
            if effective:
                cap *= e.availability
            out[e.provider] = out.get(e.provider, 0.0) + cap
        return out

    def demand(self, model: str) -> list[float]:
        """The planned demand (req/s per period) for a model."""
        for m in self.models:
            if model in (m.name, m.model):
                return list(m.demand_rps)
        raise ConfigError(f"plan has no model {model!r}; it has {[m.name for m in self.models]}")

    def cost_per_period(self) -> list[float]:
        """$ spent in each period (replicas and idle accelerators of rented units)."""
        ph = self.meta.period_hours
        return [
            sum(e.price_per_replica_hour * ph * e.replicas[t] for e in self.entries)
            + sum(i.price_per_accelerator_hour * ph * i.accelerators[t] for i in self.idle)
            for t in range(self.meta.periods)
        ]

    def _check_period(self, period: int) -> None:
        if not 0 <= period < self.meta.periods:
            raise IndexError(f"period {period} is outside 0..{self.meta.periods - 1}")

    # -- persistence --------------------------------------------------------------------
    def to_yaml(self) -> str:
        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml: many times faster
        return yaml.dump(self.model_dump(mode="json"), Dumper=dumper, sort_keys=False, width=100)

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.to_yaml())
        return p

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        """Load a plan YAML; errors name the file, the key and the expectation."""
        p = Path(path)
        data = read_yaml(p, "plan")
        try:
            plan = cls.model_validate(data)
        except ValidationError as err:
            raise ConfigError(validation_message(p, err)) from err
        for i, entry in enumerate(plan.entries):
            if len(entry.replicas) != plan.meta.periods:
                raise ConfigError(
                    f"{p}: key 'entries.{i}.replicas': expected {plan.meta.periods} values "
                    f"(meta.periods), got {len(entry.replicas)}"
                )
        for i, idle in enumerate(plan.idle):
            if len(idle.accelerators) != plan.meta.periods:
                raise ConfigError(
                    f"{p}: key 'idle.{i}.accelerators': expected {plan.meta.periods} values "
                    f"(meta.periods), got {len(idle.accelerators)}"
                )
        return plan


# -- gateway export -------------------------------------------------------------------------
GATEWAY_TIER: dict[str, str] = {
    "owned": "primary",
    "reserved_1y": "primary",
    "reserved_3y": "primary",
    "on_demand": "spillover",
    "spot": "spillover",
}


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")


def export_gateway_config(
    plan: Plan,
    *,
    period: int | None = None,
    per_replica: bool = True,
    url_template: str = "http://127.0.0.1:{port}/v1",
    base_port: int = 9001,
    host: str = "127.0.0.1",
    port: int = 8080,
    served_model: dict[str, str] | None = None,
    fallbacks: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The gateway config dict (server, providers, endpoints, models, tenants) for a plan.

    Replicas per entry are taken at `period`, or the peak over the horizon when None.
    `per_replica` gives one endpoint per replica (capacity = its concurrency); otherwise one
    endpoint per entry (capacity = replicas × concurrency). `url_template` may use {port}
    (base_port + endpoint index), {index}, {name}, {provider}, {region}, {model}.
    `served_model` maps a public model name to the model name the endpoints serve (default:
    the plan's catalog model). `fallbacks` are external API endpoints (tier fallback) given as
    endpoint dicts with at least name, provider, url and model (the public name to attach to).
    """
    served_model = served_model or {}
    endpoints: list[dict[str, Any]] = []
    by_model: dict[str, list[str]] = {m.name: [] for m in plan.models}
    spec = {m.name: m.model for m in plan.models}
    order = sorted(plan.entries, key=lambda e: (e.model, GATEWAY_TIER[e.tier], e.provider, e.key))
    for e in order:
        n = e.replicas[period] if period is not None else max(e.replicas, default=0)
        if n <= 0:
            continue
        groups = [(i, 1) for i in range(n)] if per_replica else [(0, n)]
        base = _slug(f"{e.provider}-{e.region}-{e.accelerator}-{e.tier}")
        if len(plan.models) > 1:
            base = _slug(f"{e.model}-{base}")
        for i, count in groups:
            name = f"{base}-{i}"
            idx = len(endpoints)
            model_name = served_model.get(e.model, e.model_spec or spec.get(e.model, e.model))
            url = url_template.format(
                port=base_port + idx,
                index=idx,
                name=name,
                provider=e.provider,
                region=e.region,
                model=model_name,
            )
            endpoints.append(
                {
                    "name": name,
                    "provider": e.provider,
                    "region": e.region,
                    "url": url,
                    "model": model_name,
                    "tier": GATEWAY_TIER[e.tier],
                    "capacity": max(1, e.concurrency_per_replica * count),
                    "accelerator": e.accelerator,
                    "price": {"per_hour": round(e.price_per_replica_hour * count, 4)},
                }
            )
            by_model.setdefault(e.model, []).append(name)
    for fb in fallbacks or []:
        ep = {k: v for k, v in fb.items() if k != "attach"}
        ep.setdefault("tier", "fallback")
        public = str(fb.get("attach", ep.get("model", "")))
        endpoints.append(ep)
        for m in [public] if public in by_model else list(by_model):
            by_model[m].append(str(ep["name"]))
    providers = sorted({str(ep["provider"]) for ep in endpoints})
    return {
        "server": {"host": host, "port": port},
        "providers": [{"name": p} for p in providers],
        "endpoints": endpoints,
        "models": [{"name": m, "endpoints": eps} for m, eps in by_model.items() if eps],
        "tenants": [],
    }
