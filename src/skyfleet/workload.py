"""Workload files: demand over time per model, request sizes, SLOs and priority mix.

A workload is YAML with one or more models. Demand per period (req/s) is an explicit list or
a generator (peak rate × diurnal shape × weekly shape × growth). `load_workload` validates it
and reports errors as `file: key 'a.b': expectation`. The planner and the simulator both read
this format.

Example::

    name: chat
    period_hours: 1
    periods: 168
    models:
      - name: chat                      # public name (what clients ask for)
        model: Llama-3.1-8B             # catalog model spec
        demand: {peak_rps: 40000, diurnal: chat, weekly: weekday, growth_per_week: 0.02}
        sizes:
          - {input_tokens: 300, output_tokens: 250, weight: 0.7}
          - {input_tokens: 2000, output_tokens: 400, weight: 0.3}
        slo: {ttft_ms: 1000, tpot_ms: 50, percentile: 0.99}
        priority: {critical: 0.2, standard: 0.6, sheddable: 0.2}
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from skyfleet.errors import ConfigError
from skyfleet.yamlio import read_yaml

# Hourly multipliers (max 1.0), hour 0 = midnight local time of the service's main audience.
# "chat": about 2:1 peak-to-trough, as the Azure 2024 conversation trace (research/planners.md).
DIURNAL_SHAPES: dict[str, list[float]] = {
    "flat": [1.0] * 24,
    "chat": [
        0.62,
        0.56,
        0.52,
        0.50,
        0.50,
        0.52,
        0.58,
        0.66,
        0.75,
        0.83,
        0.89,
        0.93,
        0.96,
        0.98,
        1.00,
        1.00,
        0.99,
        0.97,
        0.95,
        0.93,
        0.90,
        0.85,
        0.77,
        0.69,
    ],
    # Office hours: about 10:1 peak-to-trough, as the Azure 2024 code trace.
    "business": [
        0.10,
        0.10,
        0.10,
        0.10,
        0.10,
        0.12,
        0.20,
        0.40,
        0.70,
        0.90,
        1.00,
        1.00,
        0.95,
        0.95,
        1.00,
        1.00,
        0.95,
        0.80,
        0.55,
        0.35,
        0.25,
        0.18,
        0.14,
        0.12,
    ],
}
# Day multipliers Monday..Sunday.
WEEKLY_SHAPES: dict[str, list[float]] = {
    "flat": [1.0] * 7,
    "weekday": [1.0, 1.0, 1.0, 1.0, 0.97, 0.80, 0.78],
    "weekend": [0.85, 0.85, 0.85, 0.85, 0.90, 1.0, 1.0],
}

_STRICT = ConfigDict(extra="forbid", frozen=True)


class SizeBucket(BaseModel):
    """One request-size class: mean prompt and output tokens, and its share of requests."""

    model_config = _STRICT

    input_tokens: int = Field(gt=0, description="prompt tokens")
    output_tokens: int = Field(gt=0, description="generated tokens")
    weight: float = Field(default=1.0, gt=0, description="relative share of requests")

    @property
    def label(self) -> str:
        """A short name such as `300/250`."""
        return f"{self.input_tokens}/{self.output_tokens}"


class Slo(BaseModel):
    """Latency objectives: TTFT at a percentile and mean TPOT."""

    model_config = _STRICT

    ttft_ms: float = Field(default=1000.0, gt=0)
    tpot_ms: float = Field(default=50.0, gt=0)
    percentile: float = Field(default=0.99, gt=0, lt=1, description="0.99 or 99")

    @field_validator("percentile", mode="before")
    @classmethod
    def _percent(cls, v: Any) -> Any:
        if isinstance(v, int | float) and 1 < v < 100:
            return v / 100.0
        return v


class PriorityMix(BaseModel):
    """Fractions of requests per priority class (they sum to 1)."""

    model_config = _STRICT

    critical: float = Field(default=0.2, ge=0, le=1)
    standard: float = Field(default=0.6, ge=0, le=1)
    sheddable: float = Field(default=0.2, ge=0, le=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> PriorityMix:
        total = self.critical + self.standard + self.sheddable
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"critical + standard + sheddable must be 1, got {total:g}")
        return self


class DemandGenerator(BaseModel):
    """Demand as `peak_rps × diurnal[hour] × weekly[day] × (1 + growth_per_week)^weeks`."""

    model_config = _STRICT

    peak_rps: float = Field(gt=0, description="req/s at the busiest hour of the first week")
    diurnal: Literal["flat", "chat", "business"] | list[float] = "chat"
    weekly: Literal["flat", "weekday", "weekend"] | list[float] = "flat"
    growth_per_week: float = Field(default=0.0, gt=-1, description="0.02 = +2% per week")

    @field_validator("diurnal")
    @classmethod
    def _diurnal(cls, v: str | list[float]) -> str | list[float]:
        if isinstance(v, list) and (len(v) != 24 or min(v) < 0 or max(v) <= 0):
            raise ValueError("a list must have 24 non-negative hourly multipliers, not all 0")
        return v

    @field_validator("weekly")
    @classmethod
    def _weekly(cls, v: str | list[float]) -> str | list[float]:
        if isinstance(v, list) and (len(v) != 7 or min(v) < 0 or max(v) <= 0):
            raise ValueError("a list must have 7 non-negative day multipliers (Mon..Sun)")
        return v

    def hourly(self) -> tuple[list[float], list[float]]:
        """Diurnal and weekly multipliers, each normalised to a maximum of 1."""
        d = DIURNAL_SHAPES[self.diurnal] if isinstance(self.diurnal, str) else self.diurnal
        w = WEEKLY_SHAPES[self.weekly] if isinstance(self.weekly, str) else self.weekly
        return [x / max(d) for x in d], [x / max(w) for x in w]

    def rate_at_hour(self, hour: float, start_hour: int = 0, start_weekday: int = 0) -> float:
        """Req/s during the clock hour containing `hour` hours after the start."""
        d, w = self.hourly()
        h = math.floor(hour) + start_hour + 24 * start_weekday
        growth = (1.0 + self.growth_per_week) ** (hour / (24.0 * 7.0))
        return float(self.peak_rps * d[h % 24] * w[(h // 24) % 7] * growth)


class ModelWorkload(BaseModel):
    """Demand, request sizes, SLOs and priority mix for one served model."""

    model_config = _STRICT

    name: str = Field(min_length=1, description="public model name clients ask for")
    model: str = Field(min_length=1, description="catalog model spec, e.g. Llama-3.1-8B")
    demand: list[float] | DemandGenerator
    sizes: list[SizeBucket] = Field(
        default_factory=lambda: [SizeBucket(input_tokens=1000, output_tokens=250)], min_length=1
    )
    slo: Slo = Slo()
    priority: PriorityMix = PriorityMix()
    profiles: list[str] = Field(
        default_factory=list,
        description="measured profile YAML files (perf.Profile) overriding the roofline",
    )

    @field_validator("demand")
    @classmethod
    def _demand(cls, v: list[float] | DemandGenerator) -> list[float] | DemandGenerator:
        if isinstance(v, list):
            if not v:
                raise ValueError("the demand list needs at least one period")
            if min(v) < 0:
                raise ValueError("demand (req/s) must be ≥ 0 in every period")
        return v

    def kept_on_loss(self, shed: list[str]) -> float:
        """Share of this model's demand a plan must still serve when it may shed `shed`."""
        return 1.0 - sum(float(getattr(self.priority, c)) for c in set(shed))

    def bucket_fractions(self) -> list[float]:
        """Each size bucket's share of requests (sums to 1)."""
        total = sum(b.weight for b in self.sizes)
        return [b.weight / total for b in self.sizes]

    @property
    def tokens_per_request(self) -> float:
        """Mean input + output tokens per request."""
        fr = self.bucket_fractions()
        return sum(
            f * (b.input_tokens + b.output_tokens) for f, b in zip(fr, self.sizes, strict=True)
        )

    @property
    def output_tokens_per_request(self) -> float:
        """Mean output tokens per request."""
        fr = self.bucket_fractions()
        return sum(f * b.output_tokens for f, b in zip(fr, self.sizes, strict=True))


class PlanningOptions(BaseModel):
    """Defaults for `skyfleet plan` carried by the workload (command-line flags override)."""

    model_config = _STRICT

    providers: list[str] | None = Field(default=None, description="only these providers")
    accelerators: list[str] | None = Field(default=None, description="only these accelerators")
    tiers: list[str] | None = Field(default=None, description="only these price tiers")
    resilience: Literal["provider", "region", "none"] = "provider"
    spot_in_survivors: Literal["none", "discounted"] = Field(
        default="none",
        description="after losing a provider (region): none = only non-spot capacity of the "
        "others counts; discounted = their spot counts at spot_availability",
    )
    headroom: float = Field(
        default=0.1,
        ge=0,
        le=2,
        description="spare SLO capacity over demand, in every period and after a loss",
    )
    shed_on_loss: list[Literal["sheddable", "standard"]] = Field(
        default_factory=list,
        description="priority classes a plan may shed while a provider (region) is lost",
    )
    max_share: float | None = Field(default=None, gt=0, le=1, description="per provider")
    min_providers: int = Field(default=1, ge=1)
    spot_availability: float = Field(default=0.85, gt=0, le=1, description="spot haircut")
    target_utilization: float = Field(default=1.0, gt=0, le=1, description="of SLO capacity")


class Workload(BaseModel):
    """One or more models' demand over a horizon of equal periods."""

    model_config = _STRICT

    name: str = "workload"
    description: str = ""
    period_hours: float = Field(default=1.0, gt=0, description="length of one period")
    periods: int | None = Field(
        default=None, gt=0, description="number of periods (default: the demand lists' length)"
    )
    start_hour: int = Field(default=0, ge=0, le=23, description="clock hour of period 0")
    start_weekday: int = Field(default=0, ge=0, le=6, description="0 = Monday")
    models: list[ModelWorkload] = Field(min_length=1)
    planning: PlanningOptions = PlanningOptions()

    @model_validator(mode="after")
    def _consistent(self) -> Workload:
        names = [m.name for m in self.models]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"model names must be unique; repeated: {', '.join(sorted(dup))}")
        lengths = {len(m.demand) for m in self.models if isinstance(m.demand, list)}
        if len(lengths) > 1:
            raise ValueError(f"demand lists have different lengths {sorted(lengths)}")
        if lengths and self.periods is not None and self.periods != next(iter(lengths)):
            raise ValueError(
                f"periods is {self.periods} but the demand lists have {next(iter(lengths))} values"
            )
        if not lengths and self.periods is None:
            raise ValueError("periods is required when every model's demand is a generator")
        return self

    @property
    def n_periods(self) -> int:
        """Number of periods in the horizon."""
        if self.periods is not None:
            return self.periods
        return next(len(m.demand) for m in self.models if isinstance(m.demand, list))

    @property
    def horizon_hours(self) -> float:
        return self.n_periods * self.period_hours

    def get(self, model: str) -> ModelWorkload:
        """A model by public name (or catalog model name), or ConfigError naming the known ones."""
        for m in self.models:
            if m.name == model:
                return m
        for m in self.models:
            if m.model == model:
                return m
        known = ", ".join(m.name for m in self.models)
        raise ConfigError(f"workload {self.name!r} has no model {model!r}; it has: {known}")

    def demand(self, model: str) -> list[float]:
        """Req/s per period for a model. A generator gives each period's busiest hour."""
        m = self.get(model)
        if isinstance(m.demand, list):
            return list(m.demand)
        gen = m.demand
        out: list[float] = []
        for t in range(self.n_periods):
            start = t * self.period_hours
            end = start + self.period_hours
            hours = [max(float(h), start) for h in range(math.floor(start), math.ceil(end))]
            out.append(max(gen.rate_at_hour(h, self.start_hour, self.start_weekday) for h in hours))
        return out

    def requests_per_day(self, model: str | None = None) -> float:
        """Mean requests per day over the horizon (one model, or all)."""
        names = [model] if model else [m.name for m in self.models]
        total = 0.0
        for n in names:
            d = self.demand(n)
            total += sum(d) / len(d) * 86400.0
        return total


def validation_message(path: str | Path, err: ValidationError) -> str:
    """`file: key 'a.b': expectation (got X)` for the first error of a pydantic validation."""
    errors = err.errors()
    e = max(errors, key=lambda x: len(x["loc"]))  # the most specific branch of a union
    key = ".".join(
        str(x)
        for x in e["loc"]
        if not (str(x)[:1].isupper() or "[" in str(x) or str(x).startswith("function-"))
    )
    got = e.get("input")
    msg = str(e["msg"]).removeprefix("Value error, ")
    shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
    where = f"key '{key}'" if key else "top level"
    more = f" [+{err.error_count() - 1} more]" if err.error_count() > 1 else ""
    return f"{path}: {where}: {msg}{shown}{more}"


def load_workload(path: str | Path) -> Workload:
    """Load and validate a workload YAML file; profile paths resolve relative to the file."""
    p = Path(path)
    data = read_yaml(p, "workload")
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level: expected a mapping with 'models', got {type(data)}")
    for m in data.get("models") or []:
        if isinstance(m, dict) and isinstance(m.get("profiles"), list):
            m["profiles"] = [
                str(x) if Path(str(x)).is_absolute() else str(p.parent / str(x))
                for x in m["profiles"]
            ]
    try:
        return Workload.model_validate(data)
    except ValidationError as e:
        raise ConfigError(validation_message(p, e)) from e
