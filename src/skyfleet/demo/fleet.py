"""The demo's fleet: plan it, export the gateway config, add tenants and demo-friendly health
settings, and describe which emulator serves each endpoint."""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skyfleet.errors import SkyfleetError

if TYPE_CHECKING:
    from skyfleet.planner.plan import Plan

PRIORITY_TENANTS = (
    ("checkout-app", "critical"),
    ("chat-app", "standard"),
    ("batch-jobs", "sheddable"),
)


@dataclass(frozen=True)
class EndpointPlan:
    """One endpoint of the exported plan and the emulator profile that stands in for it."""

    name: str
    provider: str
    tier: str
    profile: str
    served_model: str
    capacity: int
    price_per_hour: float


@dataclass
class DemoFleet:
    """The plan, the gateway config (URLs filled in later) and the tenants' keys."""

    plan: Plan
    config: dict[str, Any]
    endpoints: list[EndpointPlan]
    public_model: str
    keys: dict[str, str]  # priority → API key
    admin_key: str

    def with_urls(self, urls: dict[str, str]) -> dict[str, Any]:
        """The config with each endpoint's URL replaced by its emulator's `/v1` URL."""
        config = dict(self.config)
        config["endpoints"] = [
            dict(endpoint, url=urls[endpoint["name"]]) for endpoint in self.config["endpoints"]
        ]
        return config

    def providers(self) -> list[str]:
        return sorted({endpoint.provider for endpoint in self.endpoints})

    def primary_capacity(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for endpoint in self.endpoints:
            if endpoint.tier == "primary":
                out[endpoint.provider] = out.get(endpoint.provider, 0) + endpoint.capacity
        return out


def workload_path() -> Path:
    """The packaged demo workload (a day of demand over four providers, small model)."""
    return Path(str(resources.files("skyfleet.demo").joinpath("workload.yaml")))


def solve_plan(path: Path, time_limit_s: float = 10.0) -> Plan:
    """Plan the workload with the planner's library API (MILP, N-1, baselines)."""
    from skyfleet.planner.api import plan_workload
    from skyfleet.workload import load_workload

    workload = load_workload(path)
    with _quiet_stdout():  # the solver's C library prints a banner on stdout
        return plan_workload(workload, time_limit_s=time_limit_s).plan


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Send file descriptor 1 to /dev/null for the duration (C libraries write there)."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def build_fleet(plan: Plan, *, host: str, port: int, ledger_path: Path) -> DemoFleet:
    """Export the plan at its peak period and add tenants, an admin key and health settings."""
    from skyfleet.config import hash_key
    from skyfleet.planner.plan import export_gateway_config

    config = export_gateway_config(plan, period=None, per_replica=True, host=host, port=port)
    if not config["endpoints"]:
        raise SkyfleetError("the plan has no replicas: nothing to serve")
    public = plan.models[0].name
    endpoints: list[EndpointPlan] = []
    for endpoint in config["endpoints"]:
        entry = next(
            (
                candidate
                for candidate in plan.entries
                if candidate.provider == endpoint["provider"]
                and candidate.region == endpoint.get("region", "")
                and candidate.accelerator == endpoint.get("accelerator")
            ),
            None,
        )
        tensor_parallel = entry.accelerators_per_replica if entry is not None else 1
        spec = entry.model_spec if entry is not None and entry.model_spec else endpoint["model"]
        profile = f"{spec}@{endpoint['accelerator']}" + (
            f"x{tensor_parallel}" if tensor_parallel > 1 else ""
        )
        endpoints.append(
            EndpointPlan(
                name=endpoint["name"],
                provider=endpoint["provider"],
                tier=endpoint["tier"],
                profile=profile,
                served_model=endpoint["model"],
                capacity=int(endpoint["capacity"]),
                price_per_hour=float(endpoint.get("price", {}).get("per_hour", 0.0)),
            )
        )
        endpoint["timeouts"] = {"connect_s": 1.0, "ttfb_s": 10.0, "total_s": 120.0}
    keys = {priority: "sk-demo-" + secrets.token_urlsafe(16) for _, priority in PRIORITY_TENANTS}
    admin_key = "sk-admin-" + secrets.token_urlsafe(16)
    config["server"] = {
        "host": host,
        "port": port,
        "admin_api_keys": [hash_key(admin_key)],
        "drain_timeout_s": 2.0,
        "watch_config": False,
    }
    config["ledger"] = {"path": str(ledger_path), "flush_interval_s": 0.5}
    config["routing"] = {"scrape_interval_s": 1.0, "metrics_stale_s": 3.0}
    config["health"] = {
        "consecutive_failures": 3,
        "base_ejection_s": 2.0,
        "max_ejection_s": 8.0,
        "probe_interval_s": 0.5,
        "probe_timeout_s": 0.5,
        "unhealthy_after_probe_failures": 1,
    }
    config["tenants"] = [
        {"name": name, "api_keys": [hash_key(keys[priority])], "priority": priority}
        for name, priority in PRIORITY_TENANTS
    ]
    return DemoFleet(plan, config, endpoints, public, keys, admin_key)
