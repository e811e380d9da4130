"""Offerings: the catalog of (provider, region, accelerator) rows with prices per tier.

`load_offerings(extra=...)` reads the shipped `offerings.yaml` and merges user override files
by key (provider, region, accelerator): fields given replace the shipped ones, `remove: true`
drops a row, unknown keys add rows. `expand` turns rows into one `Offering` per price tier.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from skyfleet.catalog import get_accelerator
from skyfleet.errors import ConfigError, UnknownNameError
from skyfleet.yamlio import read_yaml

TierName = Literal["on_demand", "spot", "reserved_1y", "reserved_3y", "owned"]
TIER_NAMES: tuple[TierName, ...] = ("on_demand", "spot", "reserved_1y", "reserved_3y", "owned")


class OfferingRow(BaseModel):
    """One catalog row: prices are USD per accelerator-hour; quotas count accelerators."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str = Field(min_length=1)
    region: str = Field(min_length=1)
    accelerator: str = Field(min_length=1)
    instance: str = ""
    per_instance: int = Field(default=8, gt=0, description="accelerators per instance (max TP)")
    billing_unit: int | None = Field(
        default=None, gt=0, description="accelerators rented together (default per_instance)"
    )
    on_demand: float | None = Field(default=None, ge=0)
    spot: float | None = Field(default=None, ge=0)
    reserved_1y: float | None = Field(default=None, ge=0)
    reserved_3y: float | None = Field(default=None, ge=0)
    owned: float | None = Field(default=None, ge=0, description="amortised $/accelerator-hour")
    quota: int = Field(default=512, ge=0, description="accelerators per tier")
    spot_quota: int | None = Field(default=None, ge=0)
    reserved_quota: int | None = Field(default=None, ge=0)
    spot_availability: float | None = Field(default=None, gt=0, le=1)
    estimated: list[TierName] = Field(
        default_factory=list, description="tiers whose price is an estimate, not a price list's"
    )
    date: str = Field(min_length=1, description="when the price was read (YYYY-MM-DD)")
    source_url: str = Field(default="", description="the provider's own price page")
    source: str = Field(min_length=1)

    @model_validator(mode="after")
    def _has_a_price(self) -> OfferingRow:
        if all(getattr(self, t) is None for t in TIER_NAMES):
            raise ValueError(f"a row needs at least one price: {', '.join(TIER_NAMES)}")
        if self.per_instance % self.unit:
            raise ValueError(
                f"billing_unit {self.unit} must divide per_instance {self.per_instance}"
            )
        return self

    @property
    def unit(self) -> int:
        """Accelerators rented together: cost and quota count whole units of this many."""
        return self.billing_unit or self.per_instance

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.provider, self.region, self.accelerator)

    def price(self, tier: str) -> float | None:
        v = getattr(self, tier)
        return None if v is None else float(v)

    def quota_for(self, tier: str) -> int:
        """Accelerators usable at a tier: the quota, in whole billing units."""
        q = self.quota
        if tier == "spot" and self.spot_quota is not None:
            q = self.spot_quota
        elif tier in ("reserved_1y", "reserved_3y") and self.reserved_quota is not None:
            q = self.reserved_quota
        return q // self.unit * self.unit


class Offering(BaseModel):
    """One purchasable option: a row at one price tier."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    provider: str
    region: str
    accelerator: str
    instance: str
    per_instance: int
    unit: int = Field(default=1, gt=0, description="accelerators rented together")
    tier: TierName
    price: float = Field(ge=0, description="$ per accelerator-hour")
    quota: int = Field(ge=0, description="accelerators, in whole billing units")
    availability: float = Field(default=1.0, gt=0, le=1)
    estimated: bool = False
    date: str
    source: str
    source_url: str = ""

    @property
    def committed(self) -> bool:
        """Reserved or owned: constant over the horizon."""
        return self.tier in ("reserved_1y", "reserved_3y", "owned")


def _rows(data: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(data, dict) or not isinstance(data.get("offerings"), list):
        raise ConfigError(f"{where}: top level: expected a mapping with an 'offerings' list")
    rows: list[dict[str, Any]] = data["offerings"]
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise ConfigError(f"{where}: key 'offerings.{i}': expected a mapping, got {r!r}")
    return rows


def _validate(row: dict[str, Any], where: str, i: int) -> OfferingRow:
    try:
        r = OfferingRow.model_validate(row)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{where}: key 'offerings.{i}.{key}': {msg}".rstrip(".")) from e
    try:
        canonical = get_accelerator(r.accelerator).name
    except UnknownNameError as e:
        raise ConfigError(f"{where}: key 'offerings.{i}.accelerator': {e}") from e
    return r.model_copy(update={"accelerator": canonical})


def shipped_rows() -> list[dict[str, Any]]:
    """The raw rows of the shipped catalog."""
    text = resources.files("skyfleet.catalog").joinpath("offerings.yaml").read_text()
    return _rows(yaml.safe_load(text), "skyfleet/catalog/offerings.yaml")


def merge_rows(
    base: list[dict[str, Any]], extra: list[dict[str, Any]], where: str
) -> list[dict[str, Any]]:
    """Merge override rows into base rows by (provider, region, accelerator)."""

    def key(r: dict[str, Any], i: int) -> tuple[str, str, str]:
        try:
            acc = get_accelerator(str(r["accelerator"])).name
            return (str(r["provider"]), str(r["region"]), acc)
        except KeyError as e:
            if isinstance(e, UnknownNameError):
                raise ConfigError(f"{where}: key 'offerings.{i}.accelerator': {e}") from e
            raise ConfigError(
                f"{where}: key 'offerings.{i}': needs provider, region and accelerator"
            ) from e

    out = {key(r, i): dict(r) for i, r in enumerate(base)}
    for i, r in enumerate(extra):
        k = key(r, i)
        if r.get("remove"):
            out.pop(k, None)
            continue
        out[k] = {**out.get(k, {}), **r}
    return list(out.values())


def load_offerings(extra: Sequence[str | Path] = ()) -> list[OfferingRow]:
    """Shipped rows merged with override files (in order), validated."""
    rows = shipped_rows()
    for path in extra:
        p = Path(path)
        data = read_yaml(p, "offerings")
        rows = merge_rows(rows, _rows(data, str(p)), str(p))
    where = ", ".join(["skyfleet/catalog/offerings.yaml", *map(str, extra)])
    return [_validate(r, where, i) for i, r in enumerate(rows)]


def expand(
    rows: Iterable[OfferingRow],
    spot_availability: float = 0.85,
    providers: Sequence[str] | None = None,
    accelerators: Sequence[str] | None = None,
    tiers: Sequence[str] | None = None,
) -> list[Offering]:
    """One Offering per (row, tier with a price), filtered; ids are `provider/region/acc/tier`."""
    accs = {get_accelerator(a).name for a in accelerators} if accelerators else None
    out: list[Offering] = []
    for r in rows:
        if providers is not None and r.provider not in providers:
            continue
        if accs is not None and r.accelerator not in accs:
            continue
        for t in TIER_NAMES:
            price = r.price(t)
            if price is None or (tiers is not None and t not in tiers):
                continue
            avail = (r.spot_availability or spot_availability) if t == "spot" else 1.0
            out.append(
                Offering(
                    id=f"{r.provider}/{r.region}/{r.accelerator}/{t}",
                    provider=r.provider,
                    region=r.region,
                    accelerator=r.accelerator,
                    instance=r.instance,
                    per_instance=r.per_instance,
                    unit=r.unit,
                    tier=t,
                    price=price,
                    quota=r.quota_for(t),
                    availability=avail,
                    estimated=t in r.estimated,
                    date=r.date,
                    source=r.source,
                    source_url=r.source_url,
                )
            )
    return out
