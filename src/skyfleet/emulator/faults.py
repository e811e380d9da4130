"""Fault injection: what a fault is, when it is active, and drill files (pure logic + YAML).

Every time in a fault (schedule, delays, Retry-After) is in wall-clock seconds, what a client
observes, whatever --time-scale is; the schedule counts from when the fault is posted (or
from server start for a drill file).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from skyfleet.errors import ConfigError
from skyfleet.yamlio import read_yaml

FaultKind = Literal["down", "error", "slow", "hang", "cut", "throttle", "filter", "clear"]


class Fault(BaseModel):
    """One fault as posted to /admin/faults or listed in a drill file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: FaultKind
    start_after_s: float = Field(default=0.0, ge=0)
    duration_s: float | None = Field(default=None, gt=0, description="None: until cleared")
    fraction: float = Field(default=1.0, ge=0, le=1, description="share of requests hit")
    mode: Literal["refuse", "503"] = "refuse"  # down only
    ttft_delay_s: float = Field(default=0.0, ge=0)  # slow
    per_token_delay_s: float = Field(default=0.0, ge=0)  # slow
    factor: float = Field(default=1.0, ge=1.0)  # slow: step-time multiplier
    cut_after_tokens: int = Field(default=5, ge=0)  # cut
    retry_after_s: float = Field(default=1.0, ge=0)  # throttle
    status: int = Field(default=500, ge=500, le=599)  # error


PARAMS: dict[str, tuple[str, ...]] = {  # the parameters that matter for each kind
    "down": ("mode",),
    "error": ("status",),
    "slow": ("ttft_delay_s", "per_token_delay_s", "factor"),
    "hang": (),
    "cut": ("cut_after_tokens",),
    "throttle": ("retry_after_s",),
    "filter": (),
    "clear": (),
}


@dataclass(frozen=True)
class ActiveFault:
    """A fault registered at emulated time `registered_s`, active in [starts_s, ends_s)."""

    fault_id: int
    fault: Fault
    registered_s: float
    starts_s: float
    ends_s: float

    def to_json(self, now_s: float) -> dict[str, object]:
        f = self.fault
        params = {k: getattr(f, k) for k in ("fraction", *PARAMS[f.kind])}
        return {
            "id": self.fault_id,
            "kind": f.kind,
            "start_after_s": f.start_after_s,
            "duration_s": f.duration_s,
            **params,
            "starts_at_s": self.starts_s,
            "ends_at_s": None if math.isinf(self.ends_s) else self.ends_s,
            "active": self.starts_s <= now_s < self.ends_s,
        }


class FaultSet:
    """The registered faults; `clear` faults end every fault registered before them."""

    def __init__(self) -> None:
        self._faults: list[ActiveFault] = []
        self._ids = itertools.count(1)

    def add(self, fault: Fault, now_s: float) -> ActiveFault:
        start = now_s + fault.start_after_s
        end = start + fault.duration_s if fault.duration_s is not None else math.inf
        if fault.kind == "clear" and fault.start_after_s == 0:
            self.clear()
            end = start  # an immediate clear leaves nothing behind
        entry = ActiveFault(next(self._ids), fault, now_s, start, end)
        if fault.kind == "clear":
            for i, f in enumerate(self._faults):  # end earlier faults at the clear time
                if f.fault.kind != "clear" and f.ends_s > start:
                    self._faults[i] = ActiveFault(
                        f.fault_id, f.fault, f.registered_s, f.starts_s, max(f.starts_s, start)
                    )
        else:
            self._faults.append(entry)
        return entry

    def clear(self) -> None:
        self._faults.clear()

    def remove(self, fault_id: int) -> bool:
        n = len(self._faults)
        self._faults = [f for f in self._faults if f.fault_id != fault_id]
        return len(self._faults) < n

    def listing(self, now_s: float) -> list[dict[str, object]]:
        return [f.to_json(now_s) for f in self._faults if f.ends_s > now_s]

    def active(self, now_s: float) -> list[Fault]:
        """Faults in force now, in registration order."""
        return [f.fault for f in self._faults if f.starts_s <= now_s < f.ends_s]

    def first(self, kind: str, now_s: float) -> Fault | None:
        for f in self.active(now_s):
            if f.kind == kind:
                return f
        return None

    def slow_params(self, now_s: float) -> tuple[float, float]:
        """(step-time factor, extra seconds per step) from every active `slow` fault."""
        factor, extra = 1.0, 0.0
        for f in self.active(now_s):
            if f.kind == "slow":
                factor *= f.factor
                extra += f.per_token_delay_s
        return factor, extra


def parse_fault(data: object, where: str = "fault") -> Fault:
    """Validate one fault; ConfigError names the key."""
    try:
        return Fault.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"]) or "(top)"
        raise ConfigError(f"{where}: key '{key}': {err['msg']}") from e


def load_drill(path: str | Path) -> list[Fault]:
    """A chaos drill file: YAML `faults:` list (or a bare list) of timed faults."""
    p = Path(path)
    data = read_yaml(p, "fault drill")
    items = data.get("faults") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ConfigError(f"{p}: key 'faults': expected a list of faults")
    return [parse_fault(x, f"{p}: faults[{i}]") for i, x in enumerate(items)]
