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
        text = value.strip()
        negative = text.startswith("-")
        body = text[1:] if negative else text
        try:
            seconds = float(body)
        except ValueError:
            clock = _CLOCK.match(body)
            duration = _DUR.match(body)
            if clock:
                seconds = int(clock[1]) * 3600 + int(clock[2]) * 60 + int(clock[3] or 0)
            elif duration and any(duration.groups()):
                days, hours, minutes, secs = (
                    float(part) if part else 0.0 for part in duration.groups()
                )
                seconds = days * 86400 + hours * 3600 + minutes * 60 + secs
            else:
                raise ValueError(
                    f"{value!r} is not a duration (use seconds, '90s', '15m', '4h30m' or '10:40')"
                ) from None
        return -seconds if negative else seconds
    raise ValueError(f"expected a duration, got {type(value).__name__}")


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _nonneg(value: Any) -> float:
    seconds = parse_seconds(value)
    if seconds < 0:
        raise ValueError(f"must not be negative (got {value!r})")
    return seconds


def _positive(value: Any) -> float:
    seconds = parse_seconds(value)
    if seconds <= 0:
        raise ValueError(f"must be positive (got {value!r})")
    return seconds


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

    _check_start = field_validator("start", mode="before")(_nonneg)
    _check_duration = field_validator("duration", mode="before")(_positive)

    @property
    def end(self) -> float:
        return self.start + self.duration

    @property
    def label(self) -> str:
        target = self.provider + (f"/{self.region}" if self.region else "")
        return self.name or f"{target} {'down' if self.fraction >= 1 else f'-{self.fraction:.0%}'}"


class Surge(_Base):
    """Demand is multiplied by `multiplier` (for one model, or all) for a while."""

    name: str = ""
    start: float
    duration: float
    multiplier: float = Field(gt=0)
    model: str | None = None

    _check_start = field_validator("start", mode="before")(_nonneg)
    _check_duration = field_validator("duration", mode="before")(_positive)

    @property
    def end(self) -> float:
        return self.start + self.duration


class Preemption(_Base):
    """At `at`, `fraction` of the spot replicas (of one provider, or all) are reclaimed."""

    at: float
    fraction: float = Field(default=1.0, gt=0, le=1)
    provider: str | None = None

    _check_at = field_validator("at", mode="before")(_nonneg)


class Provisioning(_Base):
    """Time for a new replica to serve: accelerator acquisition, then model load."""

    acquisition: float = 600.0
    model_load: float = 240.0

    _check_times = field_validator("acquisition", "model_load", mode="before")(_nonneg)

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

    _check_interval = field_validator("interval", mode="before")(_positive)


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

    _check_horizon = field_validator("horizon", mode="before")(
        lambda value: None if value is None else _positive(value)
    )
    _check_step = field_validator("step", mode="before")(_positive)

    def check_against(
        self,
        providers: set[str],
        regions: set[tuple[str, str]],
        models: set[str],
        path: str | Path = "scenario",
        lines: dict[Loc, int] | None = None,
    ) -> None:
        """Names must exist in the fleet; outages of the same target must not overlap."""
        lines = lines or {}
        for index, outage in enumerate(self.outages):
            if outage.provider not in providers and outage.provider not in (ALL, LARGEST):
                raise ConfigError(
                    f"{where(path, lines, ('outages', index, 'provider'))}: unknown provider "
                    f"{outage.provider!r}; the fleet has: {', '.join(sorted(providers))} "
                    f"(or '{ALL}' for all, '{LARGEST}' for the largest)"
                )
            named = (
                outage.region and outage.region != LARGEST and outage.provider not in (ALL, LARGEST)
            )
            if named and (outage.provider, outage.region) not in regions:
                known = sorted(
                    region for provider, region in regions if provider == outage.provider
                )
                raise ConfigError(
                    f"{where(path, lines, ('outages', index, 'region'))}: provider "
                    f"{outage.provider!r} has no region {outage.region!r} in the fleet; "
                    f"it has: {', '.join(known)}"
                )
            if outage.model and outage.model not in models:
                raise ConfigError(
                    f"{where(path, lines, ('outages', index, 'model'))}: unknown model "
                    f"{outage.model!r}; the fleet serves: {', '.join(sorted(models))}"
                )
        for index, surge in enumerate(self.surges):
            if surge.model and surge.model not in models:
                raise ConfigError(
                    f"{where(path, lines, ('surges', index, 'model'))}: unknown model "
                    f"{surge.model!r}; the fleet serves: {', '.join(sorted(models))}"
                )
        for index, preemption in enumerate(self.preemptions):
            if preemption.provider and preemption.provider not in providers:
                raise ConfigError(
                    f"{where(path, lines, ('preemptions', index, 'provider'))}: unknown provider "
                    f"{preemption.provider!r}; the fleet has: {', '.join(sorted(providers))}"
                )


def _overlaps(scenario: Scenario, path: str | Path, lines: dict[Loc, int]) -> None:
    outages = scenario.outages
    for later, outage in enumerate(outages):
        for earlier in range(later):
            other = outages[earlier]
            same = (
                outage.provider == other.provider or ALL in (outage.provider, other.provider)
            ) and (outage.region is None or other.region is None or outage.region == other.region)
            if same and outage.start < other.end and other.start < outage.end:
                raise ConfigError(
                    f"{where(path, lines, ('outages', later, 'start'))}: outage {later} "
                    f"({outage.label}, {outage.start / 3600:g} h–{outage.end / 3600:g} h) "
                    f"overlaps outage {earlier} "
                    f"({other.label}, {other.start / 3600:g} h–{other.end / 3600:g} h) "
                    "on the same provider; merge them"
                )
    for later, surge in enumerate(scenario.surges):
        for earlier in range(later):
            other_surge = scenario.surges[earlier]
            same_model = (
                surge.model is None or other_surge.model is None or surge.model == other_surge.model
            )
            if same_model and (surge.start < other_surge.end and other_surge.start < surge.end):
                raise ConfigError(
                    f"{where(path, lines, ('surges', later, 'start'))}: surge {later} overlaps "
                    f"surge {earlier} for the same model; merge them into one multiplier"
                )


def parse_scenario(
    data: Any, path: str | Path = "scenario", lines: dict[Loc, int] | None = None
) -> Scenario:
    """Validate scenario data; errors name the file, line and key."""
    lines = lines or {}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a scenario must be a mapping of keys (name, outages, ...)")
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as e:
        error = e.errors()[0]
        loc: Loc = tuple(
            part
            for part in error["loc"]
            if not (isinstance(part, str) and part.startswith("function"))
        )
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        raise ConfigError(f"{where(path, lines, loc)}: {message}") from e
    _overlaps(scenario, path, lines)
    return scenario


def load_scenario(path: str | Path) -> tuple[Scenario, dict[Loc, int]]:
    """Load and validate a scenario YAML file (names are checked later against the fleet)."""
    data, lines = load_with_lines(path)
    return parse_scenario(data, path, lines), lines
