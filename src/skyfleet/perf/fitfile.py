"""Read measured points from a YAML/JSON file and fit a profile to them (for the CLI)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from skyfleet.errors import ConfigError
from skyfleet.perf.profile import (
    DecodePoint,
    PrefillPoint,
    Profile,
    fit_profile,
    parse_profile_spec,
)
from skyfleet.yamlio import read_yaml


class PointsFile(BaseModel):
    """The file's schema: a base profile spec and measured points."""

    model_config = ConfigDict(extra="forbid")

    base: str | None = None
    source: str | None = None
    decode: list[DecodePoint] = []
    prefill: list[PrefillPoint] = []


@dataclass(frozen=True)
class FitRow:
    label: str
    measured: float
    model: float

    @property
    def error(self) -> float:
        return self.model / self.measured - 1.0 if self.measured > 0 else 0.0


@dataclass(frozen=True)
class FitResult:
    profile: Profile
    rows: list[FitRow]

    @property
    def max_error(self) -> float:
        return max((abs(r.error) for r in self.rows), default=0.0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile.model_dump(mode="json"),
            "points": [
                {"point": r.label, "measured_s": r.measured, "model_s": r.model, "error": r.error}
                for r in self.rows
            ],
            "max_error": self.max_error,
        }


def load_points(path: str | Path) -> PointsFile:
    """Parse a points file; errors name the file and the key."""
    p = Path(path)
    data = read_yaml(p, "points file")
    try:
        return PointsFile.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"])
        raise ConfigError(f"{p}: key '{key}': {err['msg']}") from e


def fit_from_file(path: str | Path, base: str | None = None) -> FitResult:
    """Fit the base profile (argument, else the file's `base`) to the file's points."""
    pts = load_points(path)
    spec = base or pts.base
    if not spec:
        raise ConfigError(f"{path}: key 'base': give a base profile here or with --base")
    if len(pts.decode) < 3 and len(pts.prefill) < 2:
        raise ConfigError(
            f"{path}: key 'decode'/'prefill': need ≥ 3 decode points or ≥ 2 prefill points"
        )
    start = parse_profile_spec(spec)
    fitted = fit_profile(start, pts.decode, pts.prefill, source=pts.source or f"fitted:{path}")
    rows = [
        FitRow(
            f"decode B={d.batch:g} ctx={d.context:g}",
            d.seconds,
            fitted.decode_step_time(d.batch, d.context),
        )
        for d in pts.decode
    ] + [
        FitRow(f"prefill {q.tokens:g} tokens", q.seconds, fitted.prefill_time(q.tokens))
        for q in pts.prefill
    ]
    return FitResult(fitted, rows)
