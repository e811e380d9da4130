"""The plan file's documented keys (docs/plan.md), read without the planner's own models, so
planner internals can change while plan.yaml stays compatible. Unknown keys are ignored."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from skyfleet.errors import ConfigError
from skyfleet.workload import validation_message
from skyfleet.yamlio import read_yaml

_CFG = ConfigDict(extra="ignore", frozen=True)
COMMITTED = frozenset({"reserved_1y", "reserved_3y", "owned"})


class PlannedModel(BaseModel):
    """models[]: a public model name and the catalog model serving it."""

    model_config = _CFG
    name: str = Field(min_length=1)
    model: str = Field(min_length=1)


class PlannedEntry(BaseModel):
    """entries[]: replicas of one offering for one model, per period."""

    model_config = _CFG
    model: str = Field(min_length=1)
    model_spec: str = ""
    provider: str = Field(min_length=1)
    region: str = ""
    accelerator: str = Field(min_length=1)
    accelerators_per_replica: int = Field(default=1, gt=0)
    tier: str = Field(pattern=r"^(on_demand|spot|reserved_1y|reserved_3y|owned)$")
    price_per_replica_hour: float = Field(default=0.0, ge=0)
    capacity_rps_per_replica: float = Field(default=0.0, ge=0)
    concurrency_per_replica: int = Field(default=1, gt=0)
    replicas: list[int] = Field(min_length=1)

    @property
    def peak(self) -> int:
        """Most replicas in any period."""
        return max(self.replicas)

    @property
    def low(self) -> int:
        """Fewest replicas in any period."""
        return min(self.replicas)


class PlanMeta(BaseModel):
    """meta: what the plan is for."""

    model_config = _CFG
    workload: str = ""
    period_hours: float = Field(default=1.0, gt=0)


class PlanFile(BaseModel):
    """A plan as `skyfleet plan` writes it."""

    model_config = _CFG
    meta: PlanMeta = Field(default_factory=PlanMeta)
    models: list[PlannedModel] = Field(min_length=1)
    entries: list[PlannedEntry]

    @model_validator(mode="after")
    def _known_models(self) -> PlanFile:
        names = {m.name for m in self.models}
        for i, e in enumerate(self.entries):
            if e.model not in names:
                raise ValueError(
                    f"entries[{i}].model {e.model!r} is not one of models[].name "
                    f"({', '.join(sorted(names))})"
                )
        return self

    def spec(self, e: PlannedEntry) -> str:
        """The catalog model an entry serves."""
        return e.model_spec or next(m.model for m in self.models if m.name == e.model)

    @property
    def active(self) -> list[PlannedEntry]:
        """Entries with a replica in some period."""
        return [e for e in self.entries if any(r > 0 for r in e.replicas)]


def load_plan_file(path: str | Path) -> PlanFile:
    """Read a plan YAML; errors name the file, the key and the expectation."""
    p = Path(path)
    data = read_yaml(p, "plan")
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level: expected a plan mapping (meta, models, entries)")
    try:
        return PlanFile.model_validate(data)
    except ValidationError as err:
        raise ConfigError(validation_message(p, err)) from None
