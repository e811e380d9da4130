"""Scenarios: what happens to the fleet during a simulated run (outages, surges, preemptions).

A scenario is a YAML file. Times are offsets from the start of the run: seconds as a
number, or a duration string (`90s`, `15m`, `4h30m`, `1.5h`, `1d`), or a clock time of the
first day (`10:40`). Errors name the file, the line and the key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from skyfleet.errors import ConfigError
from skyfleet.sim.yamlsrc import Loc, load_with_lines, where

ALL = "*"
"""Provider wildcard: every provider at once (a fleet-wide event)."""
LARGEST = "@largest"
"""Provider (or region) placeholder: the one holding the most capacity in the fleet."""

_DUR = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)d)?\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?"
    r"\s*(?:(\d+(?:\.\d+)?)s)?\s*$"
)
_CLOCK = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")


def parse_seconds(value: Any) -> float:
    """A number of seconds, a duration string (`4h30m`) or a clock time (`10:40`) → seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration, got a boolean")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        s = value.strip()
        neg = s.startswith("-")
        body = s[1:] if neg else s
        try:
            v = float(body)
        except ValueError:
            c = _CLOCK.match(body)
            m = _DUR.match(body)
            if c:
                v = int(c[1]) * 3600 + int(c[2]) * 60 + int(c[3] or 0)
            elif m and any(m.groups()):
                d, h, mi, se = (float(x) if x else 0.0 for x in m.groups())
                v = d * 86400 + h * 3600 + mi * 60 + se
            else:
                raise ValueError(
                    f"{value!r} is not a duration (use seconds, '90s', '15m', '4h30m' or '10:40')"
                ) from None
        return -v if neg else v
    raise ValueError(f"expected a duration, got {type(value).__name__}")


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _nonneg(v: Any) -> float:
    s = parse_seconds(v)
    if s < 0:
        raise ValueError(f"must not be negative (got {v!r})")
    return s


def _positive(v: Any) -> float:
    s = parse_seconds(v)
    if s <= 0:
        raise ValueError(f"must be positive (got {v!r})")
    return s


class Outage(_Base):
    """A provider (or one of its regions) loses `fraction` of its serving capacity.

    `kind: capacity` takes replicas down; `kind: control_plane` also blocks new replicas in
    that provider until the outage ends. `in_flight: fail` (default): requests running on
    the lost replicas fail if they streamed a token and are retried otherwise (the replica
    died); `in_flight: finish`: the replicas refuse new requests while those already running
    complete (a partition of new connections, a drain; the emulator's `down` fault).
    """

    name: str = ""
    provider: str
    region: str | None = None
    model: str | None = None
    start: float
    duration: float
    fraction: float = Field(default=1.0, gt=0, le=1)
    kind: Literal["capacity", "control_plane"] = "capacity"
    in_flight: Literal["fail", "finish"] = "fail"

    _s = field_validator("start", mode="before")(_nonneg)
    _d = field_validator("duration", mode="before")(_positive)

    @property
    def end(self) -> float:
        return self.start + self.duration

    @property
    def label(self) -> str:
        where_ = self.provider + (f"/{self.region}" if self.region else "")
        return self.name or f"{where_} {'down' if self.fraction >= 1 else f'-{self.fraction:.0%}'}"


class Surge(_Base):
    """Demand is multiplied by `multiplier` (for one model, or all) for a while."""

    name: str = ""
    start: float
    duration: float
    multiplier: float = Field(gt=0)
    model: str | None = None

    _s = field_validator("start", mode="before")(_nonneg)
    _d = field_validator("duration", mode="before")(_positive)

    @property
    def end(self) -> float:
        return self.start + self.duration


class Preemption(_Base):
    """At `at`, `fraction` of the spot replicas (of one provider, or all) are reclaimed."""

    at: float
    fraction: float = Field(default=1.0, gt=0, le=1)
    provider: str | None = None

    _a = field_validator("at", mode="before")(_nonneg)


class Provisioning(_Base):
    """Time for a new replica to serve: accelerator acquisition, then model load."""

    acquisition: float = 600.0
    model_load: float = 240.0

    _a = field_validator("acquisition", "model_load", mode="before")(_nonneg)

    @property
    def total(self) -> float:
        return self.acquisition + self.model_load


class Autoscaling(_Base):
    """Replace lost capacity and follow demand within `max_scale` × the planned replicas."""

    enabled: bool = False
    target_utilisation: float = Field(default=0.8, gt=0, le=1)
    interval: float = 60.0
    max_scale: float = Field(default=2.0, ge=1)
    replace_preempted: bool = True

    _i = field_validator("interval", mode="before")(_positive)


class Scenario(_Base):
    """Everything that happens during one run, plus how to judge it."""

    name: str = "scenario"
    description: str = ""
    source: str = ""
    horizon: float | None = None
    step: float = 60.0
    slo_target: float = Field(default=0.99, gt=0, le=1)
    outages: list[Outage] = []
    surges: list[Surge] = []
    preemptions: list[Preemption] = []
    provisioning: Provisioning = Provisioning()
    autoscaling: Autoscaling = Autoscaling()

    _h = field_validator("horizon", mode="before")(lambda v: None if v is None else _positive(v))
    _st = field_validator("step", mode="before")(_positive)

    def check_against(
        self,
        providers: set[str],
        regions: set[tuple[str, str]],
        models: set[str],
        path: str | Path = "scenario",
        lines: dict[Loc, int] | None = None,
    ) -> None:
        """Names must exist in the fleet; outages of the same target must not overlap."""
        ln = lines or {}
        for i, o in enumerate(self.outages):
            if o.provider not in providers and o.provider not in (ALL, LARGEST):
                raise ConfigError(
                    f"{where(path, ln, ('outages', i, 'provider'))}: unknown provider "
                    f"{o.provider!r}; the fleet has: {', '.join(sorted(providers))} "
                    f"(or '{ALL}' for all, '{LARGEST}' for the largest)"
                )
            named = o.region and o.region != LARGEST and o.provider not in (ALL, LARGEST)
            if named and (o.provider, o.region) not in regions:
                known = sorted(r for p, r in regions if p == o.provider)
                raise ConfigError(
                    f"{where(path, ln, ('outages', i, 'region'))}: provider {o.provider!r} "
                    f"has no region {o.region!r} in the fleet; it has: {', '.join(known)}"
                )
            if o.model and o.model not in models:
                raise ConfigError(
                    f"{where(path, ln, ('outages', i, 'model'))}: unknown model {o.model!r}; "
                    f"the fleet serves: {', '.join(sorted(models))}"
                )
        for i, s in enumerate(self.surges):
            if s.model and s.model not in models:
                raise ConfigError(
                    f"{where(path, ln, ('surges', i, 'model'))}: unknown model {s.model!r}; "
                    f"the fleet serves: {', '.join(sorted(models))}"
                )
        for i, p in enumerate(self.preemptions):
            if p.provider and p.provider not in providers:
                raise ConfigError(
                    f"{where(path, ln, ('preemptions', i, 'provider'))}: unknown provider "
                    f"{p.provider!r}; the fleet has: {', '.join(sorted(providers))}"
                )


def _overlaps(sc: Scenario, path: str | Path, lines: dict[Loc, int]) -> None:
    outs = sc.outages
    for i, a in enumerate(outs):
        for j in range(i):
            b = outs[j]
            same = (a.provider == b.provider or ALL in (a.provider, b.provider)) and (
                a.region is None or b.region is None or a.region == b.region
            )
            if same and a.start < b.end and b.start < a.end:
                raise ConfigError(
                    f"{where(path, lines, ('outages', i, 'start'))}: outage {i} "
                    f"({a.label}, {a.start / 3600:g} h–{a.end / 3600:g} h) overlaps outage {j} "
                    f"({b.label}, {b.start / 3600:g} h–{b.end / 3600:g} h) on the same provider; "
                    "merge them"
                )
    for i, s in enumerate(sc.surges):
        for j in range(i):
            t = sc.surges[j]
            if (s.model is None or t.model is None or s.model == t.model) and (
                s.start < t.end and t.start < s.end
            ):
                raise ConfigError(
                    f"{where(path, lines, ('surges', i, 'start'))}: surge {i} overlaps "
                    f"surge {j} for the same model; merge them into one multiplier"
                )


def parse_scenario(
    data: Any, path: str | Path = "scenario", lines: dict[Loc, int] | None = None
) -> Scenario:
    """Validate scenario data; errors name the file, line and key."""
    ln = lines or {}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a scenario must be a mapping of keys (name, outages, ...)")
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc: Loc = tuple(
            x for x in err["loc"] if not (isinstance(x, str) and x.startswith("function"))
        )
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        raise ConfigError(f"{where(path, ln, loc)}: {msg}") from e
    _overlaps(sc, path, ln)
    return sc


def load_scenario(path: str | Path) -> tuple[Scenario, dict[Loc, int]]:
    """Load and validate a scenario YAML file (names are checked later against the fleet)."""
    data, lines = load_with_lines(path)
    return parse_scenario(data, path, lines), lines
