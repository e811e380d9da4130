"""Small fleets built directly from the perf model (no files), shared by the simulator tests."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
import pytest

from skyfleet.perf import EngineSettings, Profile, default_profile
from skyfleet.sim import Fleet, ModelLoad, Slo, make_group


@cache
def h100_8b() -> Profile:
    """Llama-3.1-8B on one H100, batch capped at 64 sequences (keeps request-level runs fast)."""
    return default_profile("Llama-3.1-8B", "H100-SXM-80GB", engine=EngineSettings(max_num_seqs=64))


def one_model(rps: float = 0.0, periods: int = 1, period_s: float = 3600.0) -> ModelLoad:
    return ModelLoad(
        "chat",
        "Llama-3.1-8B",
        np.full(periods, rps),
        period_s,
        [(1000.0, 250.0, 1.0)],
        Slo(1.0, 0.05, 0.99),
    )


FleetFactory = Callable[..., Fleet]


@pytest.fixture
def make_fleet() -> FleetFactory:
    """`make_fleet({"aws": 2, "gcp": 2}, utilisation=0.5)`: demand = utilisation × capacity."""

    def build(
        replicas: dict[str, int],
        utilisation: float = 0.5,
        periods: int = 1,
        period_s: float = 3600.0,
        tiers: dict[str, str] | None = None,
        spot: set[str] | None = None,
    ) -> Fleet:
        ml = one_model(0.0, periods, period_s)
        groups = [
            make_group(
                f"{p}-h100",
                ml,
                p,
                f"{p}-r1",
                h100_8b(),
                [n] * periods,
                price=2.0 + i,
                tier=(tiers or {}).get(p, "primary"),
                spot=p in (spot or set()),
            )
            for i, (p, n) in enumerate(replicas.items())
        ]
        cap = sum(g.capacity_rps * n for g, n in zip(groups, replicas.values(), strict=True))
        ml.demand_rps = np.full(periods, utilisation * cap)
        return Fleet(groups, {"chat": ml}, period_s, "test")

    return build
